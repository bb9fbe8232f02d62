"""The paper venue answers the market's rules as the live venue does: a closed (resolved) market or one not accepting
orders is ``MARKET_CLOSED``, a limit off the market's tick grid or outside [tick, 1 − tick] is
``INVALID_ORDER_MIN_TICK_SIZE``; nothing is filled or taken."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import RESOLVED_WINNER, BookSnapshot, MarketInfo, write_book, write_market
from services.executor.adapters.paper_venue import PaperVenue
from services.executor.domain import venue_orders as v
from services.executor.domain.paper_book import ClosedMarkets
from services.executor.domain.paper_selling import PaperHolding
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
BIDS = ((D("0.49"), D("30")),)
ASKS = ((D("0.50"), D("20")), (D("0.60"), D("100")))


class _Plenty:
    async def read(self, wallet_id: str, asset_id: str, sending: Any) -> PaperHolding:
        sending()
        return PaperHolding(D(10**6), {})


def _buy(coid: str, limit: str = "0.60", amount: str = "10") -> v.PlaceRequest:
    return v.PlaceRequest(coid, "u", "w", "0xp", "tok", "BUY", "FAK", D(amount), None, D(limit))


def _sell(coid: str, limit: str = "0.40") -> v.PlaceRequest:
    return v.PlaceRequest(coid, "u", "w", "0xp", "tok", "SELL", "FAK", None, D("10"), D(limit))


async def _book(r: Any, tick: str = "0.01", *, tick_known: bool = True) -> None:
    now = int(time.time() * 1000)
    await write_book(r, BookSnapshot("tok", "0x" + "c" * 64, BIDS, ASKS, D(tick), now, now, tick_known=tick_known))


async def _market(r: Any, tick: str = "0.01", **kw: Any) -> None:
    await write_market(r, MarketInfo("tok", "0x" + "c" * 64, D(tick), D("5"), **kw))


def _code(o: v.VenueResult) -> str:
    assert isinstance(o, v.VenueError), o
    return o.code


@pytest.mark.parametrize("side", ["BUY", "SELL"])
@pytest.mark.parametrize("rules", [{"extra": {RESOLVED_WINNER: "tok"}}, {"closed": True},
                                   {"accepting_orders": False}])
async def test_a_paper_order_on_a_closed_market_is_refused_market_closed(r: Any, side: str,
                                                                         rules: dict[str, Any]) -> None:
    """Before: a fresh book of a resolved market filled the order (20 @ 0.50 for a BUY of a token the market
    settles, a profit no live order can make)."""
    await _book(r)
    await _market(r, **rules)
    venue = PaperVenue(r, holdings=_Plenty())
    assert _code(await venue.place(_buy("co_1") if side == "BUY" else _sell("co_1"))) == "MARKET_CLOSED"
    assert len(venue.taken) == 0 and await venue.query_by_client_id("co_1") == v.VenueError(
        "http", 404, "ORDER_NOT_FOUND", "co_1")


async def test_a_paper_order_filled_before_its_market_closed_replays_its_fill(r: Any) -> None:
    await _book(r)
    await _market(r)
    venue = PaperVenue(r, holdings=_Plenty())
    first = await venue.place(_buy("co_1"))
    assert isinstance(first, v.VenueOrder) and first.filled_size > 0
    await _market(r, extra={RESOLVED_WINNER: "tok"})
    assert await venue.place(_buy("co_1")) == first


@pytest.mark.parametrize(("book_tick", "tick_known", "market_tick", "limit"), [
    ("0.01", True, None, "0.555"),  # off the book's grid (the venue named it)
    ("0.01", False, "0.01", "0.555"),  # the book's tick is a default: the market's grid
    ("0.001", True, "0.01", "0.5555"),  # the book's tick is the newer (a tick_size_change): off it
    ("0.01", True, None, "1"),  # above 1 − tick
    ("0.01", True, None, "0.995"),
])
async def test_a_paper_limit_off_the_tick_grid_is_refused(r: Any, book_tick: str, tick_known: bool,
                                                          market_tick: str | None, limit: str) -> None:
    """Before: filled at the book's prices (20 @ 0.50) whatever the limit."""
    await _book(r, book_tick, tick_known=tick_known)
    if market_tick is not None:
        await _market(r, market_tick)
    venue = PaperVenue(r, holdings=_Plenty())
    assert _code(await venue.place(_buy("co_1", limit))) == "INVALID_ORDER_MIN_TICK_SIZE"
    assert len(venue.taken) == 0


async def test_a_paper_sell_limit_below_the_lowest_tick_is_refused(r: Any) -> None:
    await _book(r)
    venue = PaperVenue(r, holdings=_Plenty())
    assert _code(await venue.place(_sell("co_1", "0.005"))) == "INVALID_ORDER_MIN_TICK_SIZE"


@pytest.mark.parametrize(("book_tick", "tick_known", "market_tick", "limit"), [
    ("0.001", True, "0.01", "0.555"),  # on the finer grid the book says the market moved to
    ("0.01", True, None, "0.6"),
    ("0.01", False, None, "0.555"),  # no grid known: nothing to hold it to
])
async def test_a_paper_limit_on_the_markets_grid_fills(r: Any, book_tick: str, tick_known: bool,
                                                       market_tick: str | None, limit: str) -> None:
    await _book(r, book_tick, tick_known=tick_known)
    if market_tick is not None:
        await _market(r, market_tick)
    o = await PaperVenue(r, holdings=_Plenty()).place(_buy("co_1", limit))
    assert isinstance(o, v.VenueOrder) and (o.status, o.filled_size) == ("confirmed", D("20"))


async def _answer_of(harness: Harness, i: int) -> tuple[int, str, Decimal]:
    """Route manual paper BUY ``i``: its terminal event's type, reason and shares filled."""
    o = make_order(i, mode=cpb.EXECUTION_MODE_PAPER, origin=epb.ORDER_ORIGIN_MANUAL)
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    return done.type, done.reason, D(done.filled_size or "0")


async def test_a_resolved_market_stays_closed_to_paper_orders_once_its_rules_are_dropped(harness: Harness) -> None:
    """The executor drops the market's cached rules (``tt:market``) on a ``MARKET_CLOSED``; the next paper order of
    the market must not find it open for want of them (before: REJECTED, then FILLED 20 @ 0.50)."""
    await harness.set_book(ASSET, [("0.49", "30")], [("0.50", "20")])
    await write_market(harness.redis, MarketInfo(ASSET, CONDITION, D("0.01"), D("1"), extra={RESOLVED_WINNER: ASSET}))
    await harness.start_executor(live=False)
    closed = (epb.ORDER_EVENT_TYPE_REJECTED, "MARKET_CLOSED", D(0))
    assert await _answer_of(harness, 1) == closed
    assert await _answer_of(harness, 2) == closed


def test_a_market_found_closed_is_remembered_until_its_rules_say_open() -> None:
    seen = ClosedMarkets(limit=2)
    assert not seen.closed("a", None) and not seen.closed("a", False)
    assert seen.closed("a", True) and seen.closed("a", None)
    assert not seen.closed("a", False) and not seen.closed("a", None)
    for asset in ("a", "b", "c"):
        seen.closed(asset, True)
    assert (seen.closed("a", None), seen.closed("b", None), seen.closed("c", None), len(seen)) == (False, True, True, 2)
