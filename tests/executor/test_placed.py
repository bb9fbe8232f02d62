"""Status queries of a placed order against a fake venue: which id is asked, and what the answer changes."""

from __future__ import annotations

from decimal import Decimal

from services.executor.burst_gate import BurstGate
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.placed_orders import PlacedQueries
from tradingtools.execution.v1 import execution_pb2 as epb


class MovedVenue:
    """Knows order co_1 only under the venue order id io_new (its POST was answered with io_old)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def query(self, venue_order_id: str) -> v.VenueResult:
        self.calls.append(("id", venue_order_id))
        if venue_order_id == "io_new":
            return v.VenueOrder("io_new", "co_1", v.LIVE, Decimal("10"), Decimal("0.5"))
        return v.VenueError("http", 404, "ORDER_NOT_FOUND", venue_order_id)

    async def query_by_client_id(self, client_order_id: str) -> v.VenueResult:
        self.calls.append(("coid", client_order_id))
        return v.VenueOrder("io_new", client_order_id, v.LIVE, Decimal("10"), Decimal("0.5"))


async def _apply(t: Ticket, life: lc.OrderLife, events: list[lc.Event],
                 order: v.VenueOrder | None = None) -> lc.OrderLife:
    for e in events:
        life = lc.apply(life, e)
    return life


async def test_an_order_found_by_client_id_under_another_venue_id_is_then_asked_for_by_that_id() -> None:
    venue = MovedVenue()
    placed = PlacedQueries({INSIDERS: venue}, BurstGate(0.0), _apply,  # type: ignore[dict-item]
                           lost_after=3, lost_after_s=300.0)
    ticket = Ticket(epb.Order(client_order_id="co_1"), INSIDERS, None, 0)
    life, changed = await placed.poll(ticket, lc.OrderLife("co_1", lc.State.PLACED, "io_old"))
    assert changed and life.state is lc.State.PARTIALLY_FILLED
    assert venue.calls == [("id", "io_old"), ("coid", "co_1")]
    venue.calls.clear()
    assert await placed.poll(ticket, life) == (life, False)
    assert venue.calls == [("id", "io_new")]  # one query a poll, not two for good
    placed.forget("co_1")
    venue.calls.clear()
    await placed.poll(ticket, life)
    assert venue.calls == [("id", "io_old"), ("coid", "co_1")]
