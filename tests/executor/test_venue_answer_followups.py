"""Venue answers that must neither end an order on a guess nor go unnoticed: a final answer without its filled size
(placed and cancel paths), and a positions answer that is not a plain 200."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.alerts import OUTBOX, AlertKind
from common.config import Secret
from common.http1parse import Response
from services.executor.adapters.insiders_api import InsidersVenue, parse_order
from services.executor.burst_gate import BurstGate
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.placed_orders import PlacedQueries
from tradingtools.execution.v1 import execution_pb2 as epb

NOT_FOUND = v.VenueError("http", 404, "ORDER_NOT_FOUND", "")
CONFIRMED_NO_SIZE = b'{"orderId": "io_1", "clientOrderId": "co_1", "status": "confirmed", "avgPrice": "0.5"}'
CANCELLED_NO_SIZE = b'{"orderId": "io_1", "clientOrderId": "co_1", "status": "cancelled"}'


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


class Venue:
    """Answers every status query with ``query_answer`` and every cancel with ``cancel_answer``."""

    def __init__(self, query_answer: v.VenueResult, cancel_answer: v.VenueResult = NOT_FOUND) -> None:
        self.query_answer, self.cancel_answer = query_answer, cancel_answer
        self.cancels = 0

    async def query(self, venue_order_id: str) -> v.VenueResult:
        return self.query_answer

    async def query_by_client_id(self, client_order_id: str) -> v.VenueResult:
        return self.query_answer

    async def cancel(self, venue_order_id: str) -> v.VenueResult:
        self.cancels += 1
        return self.cancel_answer


async def _apply(t: Ticket, life: lc.OrderLife, events: list[lc.Event], order: Any = None) -> lc.OrderLife:
    for e in events:
        life = lc.apply(life, e)
    return life


def _alerts() -> list[Any]:
    return [a for a in OUTBOX.take(len(OUTBOX.items)) if a.kind == AlertKind.VENUE_ANSWER_IMPLAUSIBLE]


async def _poll_for(venue: Venue, seconds: list[int]) -> lc.OrderLife:
    clock = Clock()
    placed = PlacedQueries({INSIDERS: venue}, BurstGate(0.0), _apply,  # type: ignore[dict-item]
                           lost_after=3, lost_after_s=300.0, clock_ms=clock)
    ticket = Ticket(epb.Order(client_order_id="co_1"), INSIDERS, None, 0)
    life = lc.OrderLife("co_1", lc.State.PARTIALLY_FILLED, "io_1", filled_size=Decimal("40"),
                        avg_price=Decimal("0.5"))
    for s in seconds:
        clock.ms = s * 1000
        life, _changed = await placed.poll(ticket, life)
    return life


async def test_a_placed_order_answered_confirmed_without_filled_size_for_an_hour_is_told() -> None:
    """The venue answers every status query 'confirmed' with no filledSize: the order is never ended on a guess
    (not read as filled 0), but an hour of such answers raises VENUE_ANSWER_IMPLAUSIBLE, as an unlisted status word
    does after the LOST window (300 s): its reservation is held and a fill may be unbooked."""
    OUTBOX.take(len(OUTBOX.items))
    answer = parse_order(CONFIRMED_NO_SIZE)
    assert isinstance(answer, v.VenueOrder) and answer.status not in v.LISTED  # read as an unlisted word
    life = await _poll_for(Venue(answer), list(range(0, 3600, 60)))
    assert life.state is lc.State.PARTIALLY_FILLED  # never ended (as wanted: not read as filled 0)
    assert _alerts(), "an order answered only unreadably for an hour raised no alert"


async def test_a_missing_order_whose_cancel_answers_without_filled_size_ends_or_is_told() -> None:
    """Lookups miss a resting order (40 of 100 filled); the cancel sent before LOST is answered 200 'cancelled'
    without filledSize: its fills since the last query are unknown, so the order is not ended on a guess, and it is
    alerted rather than cancelled again unheard for an hour."""
    OUTBOX.take(len(OUTBOX.items))
    venue = Venue(NOT_FOUND, parse_order(CANCELLED_NO_SIZE))
    life = await _poll_for(venue, list(range(0, 3600, 60)))
    assert venue.cancels >= 1
    assert life.terminal or _alerts(), "never ended, never alerted"



@pytest.mark.parametrize("status", [203, 206])
async def test_a_positions_answer_that_is_not_200_is_not_read_as_the_whole_count(status: int) -> None:
    """Only a redemption answer may be any 2xx: a 206 Partial Content (or 203 from a cache) of the positions would
    be read as the wallet's whole count, and reconciliation closes (CLOSED_AT_VENUE) every booked position it leaves
    out; anything but a 200 skips the round."""
    venue = InsidersVenue("http://127.0.0.1:9", Secret("t"))
    await venue.http.close()

    class Http:
        async def request(self, method: str, path: str, **kw: Any) -> Response:
            return Response(status, {}, b'{"positions": [], "asOf": "2026-11-29T08:00:00Z"}')

    venue.http = Http()  # type: ignore[assignment]
    answer = await venue.positions("w_1")
    assert answer.status != 200
