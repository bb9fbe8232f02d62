"""An exit SELL is held to the operator ceiling at the same price as a SELL sized on the position
(``sell_sizing.ceiling_price``): the highest of its reference price, the best bid and its limit, not the limit
alone (which is the bid less the slippage: 205 shares into a bid of 0.50 fetch $102.50 of a $100 ceiling)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from common.marketstate import BookSnapshot
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.sell_sizing import ceiling_price, sell_worth_price
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

NOW = 10**18
CID = "0x" + "ab" * 32
CAP = IntakeRules(live_configured=True, max_order_usd=D("100"))


def book(bid: str) -> BookSnapshot:
    return BookSnapshot("tok", CID, ((D(bid), D("100000")),), ((D(bid) + D("0.01"), D("100000")),), D("0.01"), 1, 1,
                        tick_known=True)


def sell(**kw: object) -> epb.Order:
    base: dict[str, object] = dict(
        client_order_id="co_1", origin=epb.ORDER_ORIGIN_TRIGGER, follower_wallet_id="w", asset_id="tok",
        condition_id=CID, side=cpb.SIDE_SELL, order_type=epb.ORDER_TYPE_FAK, max_slippage_bps=500, tick_size="0.01",
        min_order_size="5", size="205", mode=cpb.EXECUTION_MODE_LIVE, routed_time_ns=NOW - 1000)
    base.update(kw)
    return epb.Order(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("o", "bid", "sent"), [
    (sell(reference_price="0.50"), "0.50", D("200")),  # limit 0.475 → 0.48; at the bid 0.50: $100
    (sell(reference_price="0.40"), "0.50", D("200")),  # the bid is higher than the reference
    (sell(reference_price="0.60"), "0.50", D("166.66")),  # the reference is higher than the bid
    (sell(origin=epb.ORDER_ORIGIN_COPY, subscription_id="s", leader_trade_id="t", max_slippage_bps=200,
          reference_price="0.50"), "0.50", D("200")),
    (sell(reference_price="0.40", size="180"), "0.50", D("180")),  # $90 at the bid: not cut
    # a given limit above the bid (a resting exit) is worth its limit
    (sell(reference_price="0.40", order_type=epb.ORDER_TYPE_GTC, limit_price="0.80"), "0.50", D("125")),
])
def test_an_exit_is_held_to_the_ceiling_at_the_higher_of_reference_bid_and_limit(o: epb.Order, bid: str,
                                                                                  sent: D) -> None:
    p = prepare(o, book(bid), CAP, NOW)
    assert p.life.state is State.SUBMITTING and p.ticket.request is not None, (p.life.reason, p.life.detail)
    assert p.ticket.request.size == sent


def test_an_exit_without_a_book_is_held_at_its_reference_price() -> None:
    p = prepare(sell(reference_price="0.50"), None, CAP, NOW)
    assert p.ticket.request is not None and p.ticket.request.size == D("200")


@pytest.mark.parametrize(("reference", "bid", "price"), [("0.5", "0.6", "0.6"), ("0.5", "0.4", "0.5"),
                                                         ("", "0.4", "0.4"), ("x", None, "0")])
def test_the_sized_and_the_given_sell_agree_on_the_price(reference: str, bid: str | None, price: str) -> None:
    b = D(bid) if bid is not None else None
    given = D(reference) if reference not in ("", "x") else None
    assert ceiling_price(reference, b) == sell_worth_price(given, b, D(0)) == D(price)
