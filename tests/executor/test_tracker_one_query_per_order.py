"""An order taken from the tracker and handed back (an operator's end refused after the take-over) is queried by one
chain of status queries, never two at once: two queries of one order answered in flight together would both be read
against the same state, and a fill that grew between them booked twice."""

from __future__ import annotations

import asyncio

from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.ticket import PAPER, Ticket
from services.executor.status_tracker import Tracker
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb


class SlowVenue:
    """Status queries that take ``hold_s``; counts those of each order under way at once."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.calls = 0

    async def poll(self, ticket: Ticket, life: OrderLife) -> tuple[OrderLife, bool]:
        coid = ticket.client_order_id
        self.calls += 1
        self.running[coid] = self.running.get(coid, 0) + 1
        self.peak[coid] = max(self.peak.get(coid, 0), self.running[coid])
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            self.running[coid] -= 1
        return life, True  # changed: the next query is due soon again


def _order() -> tuple[Ticket, OrderLife]:
    return Ticket(epb.Order(client_order_id="co_1"), PAPER, None, 0), OrderLife("co_1", State.PLACED, "io_1")


async def test_an_order_discarded_before_its_query_and_tracked_again_is_queried_one_at_a_time() -> None:
    venue = SlowVenue(hold_s=0.05)
    tracker = Tracker(venue.poll, initial_s=0.01, max_s=0.01)
    ticket, life = _order()
    tracker.add(ticket, life)
    await tracker.discard("co_1")  # its first query was due, not under way
    tracker.add(ticket, life)
    try:
        await eventually(lambda: venue.calls >= 8, timeout_s=5)
        assert venue.peak["co_1"] == 1
    finally:
        await tracker.close()


async def test_an_order_discarded_under_its_query_and_tracked_again_is_queried_one_at_a_time() -> None:
    venue = SlowVenue(hold_s=0.05)
    tracker = Tracker(venue.poll, initial_s=0.01, max_s=0.01)
    ticket, life = _order()
    tracker.add(ticket, life)
    await eventually(lambda: venue.running.get("co_1", 0) == 1, timeout_s=5)
    await tracker.discard("co_1")  # waits for the query under way
    tracker.add(ticket, life)
    try:
        await eventually(lambda: venue.calls >= 8, timeout_s=5)
        assert venue.peak["co_1"] == 1
    finally:
        await tracker.close()
