"""A price of 0 in a tick is no price: ingest accepts prices in [0, 1] (a book's or a trade's ``last_trade_price``
"0"), and the tick's other prices must still fire what they cross. Ticks are built by ingest's real book state."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.clob_rest import parse_book
from services.guard.domain import tick_view
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest import clob
from services.ingest.books import BookState
from tests.guard.inprocess import NOW_NS, in_process_guard
from tradingtools.market.v1 import market_pb2 as mpb

A = "7001"
D = Decimal
VENUE_MS = NOW_NS // 1_000_000


class _Markets:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, asset_id: str) -> None:
        self.forgotten.append(asset_id)


def _book(bid: str, ask: str, last: str, tick_size: str = "0.01") -> dict[str, Any]:
    return {"asset_id": A, "market": "0xc0", "timestamp": str(VENUE_MS), "tick_size": tick_size,
            "bids": [{"price": bid, "size": "100"}], "asks": [{"price": ask, "size": "100"}], "last_trade_price": last}


def _ingest_tick(state: BookState, msg: clob.ClobMsg) -> mpb.PriceTick:
    touched = state.apply(msg, VENUE_MS)
    assert touched and touched[-1].emit
    return state.price_tick(A, touched[-1].kind, NOW_NS)


def _state(first: dict[str, Any]) -> BookState:
    state = BookState()
    state.track(A)
    state.apply(parse_book(first), VENUE_MS)
    return state


@pytest.mark.parametrize(("msg", "kind"), [
    # a snapshot whose last trade is "0": the bid 0.35 crosses the stop-loss
    (parse_book(_book("0.35", "0.37", "0")), mpb.TICK_KIND_BOOK),
    # a trade printed at "0" after the book fell: the bid 0.35 still crosses
    (clob.parse_last_trade({"asset_id": A, "market": "0xc0", "price": "0", "side": "SELL", "size": "5",
                            "timestamp": str(VENUE_MS)}), mpb.TICK_KIND_LAST_TRADE_PRICE),
    # a snapshot with a new tick size: the market info is forgotten and the bid fires
    (parse_book(_book("0.35", "0.37", "0", tick_size="0.001")), mpb.TICK_KIND_TICK_SIZE_CHANGE),
])
async def test_a_zero_last_trade_does_not_hide_the_bid_crossing_a_stop_loss(msg: clob.ClobMsg, kind: int) -> None:
    # the last trade case: the book fell while the stop was not armed yet, the trade is the first tick guard reads
    first = _book("0.35", "0.37", "0.36") if kind == mpb.TICK_KIND_LAST_TRADE_PRICE else _book("0.50", "0.52", "0.5")
    state = _state(first)
    tick = _ingest_tick(state, msg)
    assert tick.kind == kind and tick.last_trade_price == "0"
    guard, _store = in_process_guard([TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.40"))], stub_fires=True)
    markets = guard.markets = _Markets()  # type: ignore[assignment]
    out = await guard.on_tick(tick)
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ["s"], f"bid {tick.best_bid} under the 0.40 stop: bad ticks " \
                                                     f"{guard.stats.bad_ticks}"
    assert out.fired[0].price == D(tick.best_bid)
    assert markets.forgotten == ([A] if kind == mpb.TICK_KIND_TICK_SIZE_CHANGE else [])


async def test_a_last_trade_stop_is_not_fired_by_a_zero_and_a_later_fresh_tick_is_still_quiet() -> None:
    """A 0 is no price for a LAST_TRADE trigger either: it neither fires its stop-loss nor breaks the cheap path."""
    guard, _store = in_process_guard([TriggerSpec("l", A, Kind.STOP_LOSS, source=Source.LAST_TRADE,
                                                  trigger_price=D("0.40"))], stub_fires=True)
    state = _state(_book("0.50", "0.52", "0.5"))
    out = await guard.on_tick(_ingest_tick(state, parse_book(_book("0.49", "0.51", "0"))))
    assert not out.fired and guard.stats.bad_ticks == 0
    quiet = guard.stats.quiet_ticks
    tick = _ingest_tick(state, parse_book(_book("0.48", "0.50", "0")))
    tick_view.view(tick, NOW_NS, 10**9)  # the quiet check only trusts prices parsed once already
    out = await guard.on_tick(tick)
    assert not out.fired and guard.stats.quiet_ticks == quiet + 1


@pytest.mark.parametrize(("bid", "mid", "last", "prices"), [
    ("0.35", "0.36", "0", (D("0.35"), D("0.36"), None)),
    ("0", "", "0.4", (None, None, D("0.4"))),
    ("1", "", "", (D(1), None, None)),
    ("0.000", "", "", (None, None, None)),
])
def test_view_reads_a_zero_as_no_price(bid: str, mid: str, last: str,
                                       prices: tuple[Decimal | None, ...]) -> None:
    tick = mpb.PriceTick(asset_id=A, best_bid=bid, mid=mid, last_trade_price=last, received_time_ns=NOW_NS)
    for _ in range(2):  # parsed, then from the cache
        assert tuple(tick_view.view(tick, NOW_NS, 10**9).prices) == prices
        assert tick_view.known_prices((bid, mid, last)) == list(prices)


@pytest.mark.parametrize("raw", ["-0.01", "1.01", "x", "NaN"])
def test_view_refuses_a_price_outside_0_1(raw: str) -> None:
    with pytest.raises(tick_view.BadTick):
        tick_view.view(mpb.PriceTick(asset_id=A, best_bid=raw, received_time_ns=NOW_NS), NOW_NS, 10**9)
