"""The tracker: one scheduler polls every placed order until it is final."""

from __future__ import annotations

import asyncio

import pytest

from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.ticket import PAPER, Ticket
from services.executor.status_tracker import Tracker, error_delay, next_delay
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb


@pytest.mark.parametrize(("delay", "changed", "expected"), [
    (0.2, False, 0.4),  # nothing changed: twice as long
    (1.6, False, 2.0),  # ... at most max_s
    (2.0, False, 2.0),
    (2.0, True, 0.2),  # a change: soon again
    (0.2, True, 0.2),
])
def test_next_delay(delay: float, changed: bool, expected: float) -> None:
    assert next_delay(delay, changed=changed, initial_s=0.2, max_s=2.0) == expected


@pytest.mark.parametrize(("errors", "expected"), [(1, 1.0), (2, 2.0), (5, 16.0), (6, 30.0), (20, 30.0)])
def test_error_delay(errors: int, expected: float) -> None:
    assert error_delay(errors, 0.5) == expected


def _ticket(i: int) -> Ticket:
    return Ticket(epb.Order(client_order_id=f"co_{i}"), PAPER, None, 0)


def _placed(i: int) -> OrderLife:
    return OrderLife(f"co_{i}", State.PLACED, f"io_{i}")


class Venue:
    """A poll whose answers are scripted per order: True = changed, a State = the order's new state."""

    def __init__(self, script: dict[str, list[bool | State]] | None = None, *, hold_s: float = 0.0) -> None:
        self.script = script or {}
        self.hold_s = hold_s
        self.calls: list[str] = []
        self.running = 0
        self.peak = 0

    async def poll(self, ticket: Ticket, life: OrderLife) -> tuple[OrderLife, bool]:
        coid = ticket.client_order_id
        self.calls.append(coid)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            self.running -= 1
        steps = self.script.get(coid) or [State.FILLED]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, State):
            return OrderLife(coid, step, life.venue_order_id), True
        return life, step


async def test_an_order_is_polled_until_final_then_dropped() -> None:
    venue = Venue({"co_1": [False, True, State.PARTIALLY_FILLED, False, State.FILLED]})
    tracker = Tracker(venue.poll, initial_s=0.001, max_s=0.004)
    tracker.add(_ticket(1), _placed(1))
    assert "co_1" in tracker and len(tracker) == 1
    await eventually(lambda: "co_1" not in tracker)
    assert venue.calls == ["co_1"] * 5
    await tracker.close()


async def test_an_order_is_tracked_once_and_a_final_one_not_at_all() -> None:
    venue = Venue({"co_1": [False, False, State.FILLED]})
    tracker = Tracker(venue.poll, initial_s=0.001, max_s=0.002)
    tracker.add(_ticket(1), _placed(1))
    tracker.add(_ticket(1), _placed(1))
    tracker.add(_ticket(2), OrderLife("co_2", State.FILLED))
    assert len(tracker) == 1 and "co_2" not in tracker
    await eventually(lambda: len(tracker) == 0)
    assert venue.calls == ["co_1"] * 3
    await tracker.close()


async def test_queries_run_at_most_max_concurrent_at_once_and_all_orders_are_served() -> None:
    venue = Venue(hold_s=0.01)
    tracker = Tracker(venue.poll, initial_s=0.001, max_s=0.001, max_concurrent=3)
    for i in range(20):
        tracker.add(_ticket(i), _placed(i))
    await eventually(lambda: len(tracker) == 0)
    assert sorted(venue.calls) == sorted(f"co_{i}" for i in range(20)) and venue.peak == 3
    await tracker.close()


async def test_an_order_due_sooner_wakes_a_tracker_waiting_for_a_later_one() -> None:
    venue = Venue()
    tracker = Tracker(venue.poll, initial_s=60.0, max_s=60.0)
    tracker.add(_ticket(1), _placed(1))  # due in a minute: the tracker sleeps until then
    await asyncio.sleep(0.01)
    tracker.initial_s = 0.001
    tracker.add(_ticket(2), _placed(2))
    await eventually(lambda: "co_2" not in tracker, timeout_s=5)
    assert venue.calls == ["co_2"] and "co_1" in tracker
    await tracker.close()
    assert len(tracker) == 0


async def test_failed_queries_are_retried_then_the_order_is_left_for_the_next_start() -> None:
    calls: list[str] = []

    async def failing(ticket: Ticket, life: OrderLife) -> tuple[OrderLife, bool]:
        calls.append(ticket.client_order_id)
        if ticket.client_order_id == "co_1":
            raise RuntimeError("venue client bug")
        return OrderLife(ticket.client_order_id, State.FILLED), True

    tracker = Tracker(failing, initial_s=0.001, max_s=0.001, max_errors=3, error_backoff_s=0.001)
    tracker.add(_ticket(1), _placed(1))
    tracker.add(_ticket(2), _placed(2))
    await eventually(lambda: len(tracker) == 0)
    assert calls.count("co_1") == 3 and calls.count("co_2") == 1
    await tracker.close()


async def test_close_cancels_queries_under_way() -> None:
    venue = Venue(hold_s=60.0)
    tracker = Tracker(venue.poll, initial_s=0.001, max_s=0.001)
    tracker.add(_ticket(1), _placed(1))
    await eventually(lambda: venue.running == 1)
    await asyncio.wait_for(tracker.close(), timeout=5)
    assert venue.running == 0 and len(tracker) == 0
