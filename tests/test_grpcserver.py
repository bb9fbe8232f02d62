"""What a service reports of its asyncio tasks on SIGUSR1."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.grpcserver import HUNG_EXIT_CODE, task_stacks


async def _waits_inside(event: asyncio.Event) -> None:
    await _waits_here(event)


async def _waits_here(event: asyncio.Event) -> None:
    await event.wait()


async def test_task_stacks_name_each_task_and_every_coroutine_it_waits_in() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_waits_inside(event), name="the-waiter")
    await asyncio.sleep(0)
    try:
        text = task_stacks([task])
        lines = text.splitlines()
        assert lines[0] == "--- the-waiter"
        names = [line.rsplit(" ", 1)[-1] for line in lines[1:]]
        assert names[:3] == ["_waits_inside", "_waits_here", "wait"]  # outermost first, down to Event.wait
    finally:
        event.set()
        await task
    assert task_stacks([]) == ""


_STUCK_MAIN = """
import asyncio, sys
from common.grpcserver import run

async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # a task that will not end when cancelled

async def main() -> None:
    asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    raise ConnectionError("redis is still down")

run(main, exit_grace_s=float(sys.argv[1]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("grace_s", [0.2, 1.0])
def test_a_failed_main_ends_the_process_even_when_a_task_will_not_end(grace_s: float) -> None:
    """asyncio's clean-up after a failed main waits for every cancelled task; one that does not end kept a service
    that failed at start-up alive, serving nothing, where its supervisor could not see it (chaos: a machine crash)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _STUCK_MAIN, str(grace_s)], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == HUNG_EXIT_CODE, done.stderr[-2000:]
    assert time.monotonic() - started < grace_s + 30  # the interpreter's start included
