"""Automatic garbage collection is off while a fan-out is written, back on once it is answered (or after a bound)."""

from __future__ import annotations

import pytest

from services.executor.burst_gate import BurstGate
from services.executor.gc_pause import GcPause
from tests.helpers import eventually


class FakeCollector:
    """The ``gc`` module's switch."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.switches: list[bool] = []

    def isenabled(self) -> bool:
        return self.enabled

    def enable(self) -> None:
        self.enabled = True
        self.switches.append(True)

    def disable(self) -> None:
        self.enabled = False
        self.switches.append(False)


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_s must be > 0"):
        GcPause(0.0)


async def test_a_pause_turns_collection_off_once_and_back_on() -> None:
    gc = FakeCollector()
    pause = GcPause(10.0, gc)
    pause.pause()
    pause.pause()  # already paused: nothing more
    assert gc.switches == [False] and pause.paused and pause.pauses == 1
    pause.resume()
    pause.resume()  # not paused: nothing
    assert gc.switches == [False, True] and not pause.paused


async def test_collection_someone_else_turned_off_is_left_alone() -> None:
    gc = FakeCollector(enabled=False)
    pause = GcPause(10.0, gc)
    pause.pause()
    pause.resume()
    assert gc.switches == [] and not gc.enabled


async def test_a_pause_ends_by_itself_after_its_bound() -> None:
    gc = FakeCollector()
    pause = GcPause(0.05, gc)
    pause.pause()
    assert gc.switches == [False] and pause.paused
    await eventually(lambda: not pause.paused, timeout_s=5, message="the pause did not end by itself")
    assert gc.switches == [False, True]


@pytest.mark.parametrize(("orders", "paused_during"), [(3, False), (33, True), (1000, True)])
async def test_a_burst_pauses_collection_from_its_start_until_it_is_answered(orders: int,
                                                                            paused_during: bool) -> None:
    gc = FakeCollector()
    gate = BurstGate(5.0, min_pending=32, gc_pause=GcPause(10.0, gc))
    gate.add(orders)
    gate.sent(orders)
    assert (not gc.enabled) is paused_during  # written, not answered yet: still off
    gate.done(orders - 32)
    gate.done(32)
    assert gc.enabled and gc.switches == ([False, True] if paused_during else [])
