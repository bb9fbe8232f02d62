"""A service told to stop (SIGTERM) ends in bounded time, even when a step of its stop never ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.grpcserver import HUNG_EXIT_CODE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]

_SERVICE = """
import asyncio, sys
import common.grpcserver as g
from tests.helpers import INTERNAL

g.STOP_MARGIN_S = float(sys.argv[2])

async def main() -> None:
    if sys.argv[3] == "starting":
        print("serving", flush=True)  # not yet: a SIGTERM now comes before the service handles it
        await asyncio.Event().wait()
    srv = await g.start_server("127.0.0.1", 0, lambda s: [], security=INTERNAL)
    # printed once wait_for_termination (which runs up to its first wait at once) handles the signals
    asyncio.get_running_loop().call_soon(lambda: print("serving", flush=True))
    await g.wait_for_termination(srv, float(sys.argv[1]))
    if sys.argv[3] == "hangs":
        await asyncio.Event().wait()  # a step of the stop waits for a dependency that never answers

g.run(main)
"""


def _stopped(stop: str, grace_s: float, margin_s: float) -> tuple[int, float]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVICE, str(grace_s), str(margin_s), stop], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "serving", proc.stderr.read() if proc.stderr else ""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=grace_s + margin_s + 20)
        return code, time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stop_that_never_ends_is_ended_after_the_grace_period_and_its_margin() -> None:
    code, took = _stopped("hangs", 0.2, 1.0)
    assert code == HUNG_EXIT_CODE
    assert 1.2 <= took < 1.2 + 10


def test_a_stop_that_ends_exits_cleanly_before_the_timer() -> None:
    code, took = _stopped("ends", 0.2, 30.0)
    assert code == 0
    assert took < 10


def test_a_stop_during_start_up_ends_the_process_cleanly() -> None:
    """A SIGTERM before the service handles signals itself (start-up waiting on a dependency) killed it by the
    default action (-15), with no line in its log."""
    code, took = _stopped("starting", 0.2, 30.0)
    assert code == 0
    assert took < 10
