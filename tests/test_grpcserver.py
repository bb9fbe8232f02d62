"""What a service reports of its asyncio tasks on SIGUSR1."""

from __future__ import annotations

import asyncio

from common.grpcserver import task_stacks


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
