"""An order the venue must refuse is refused here, never sent (FORMATS §4.5): a size below the market's
``min_order_size`` (shares, any order sized in shares: a GTC BUY, every SELL), a FOK/FAK BUY below the $1
marketable minimum; a USD amount is floored to the cent and a share size to the hundredth, refused when nothing
is left."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from common.marketstate import BookSnapshot
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.pricing import marketable_minimum_refusal
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

NOW = 10**18
CID = "0x" + "ab" * 32
RULES = IntakeRules(live_configured=True)
GTC, FOK = epb.ORDER_TYPE_GTC, epb.ORDER_TYPE_FOK
SELL = cpb.SIDE_SELL
MANUAL, TRIGGER, COPY = epb.ORDER_ORIGIN_MANUAL, epb.ORDER_ORIGIN_TRIGGER, epb.ORDER_ORIGIN_COPY


def book(bid: str = "0.39", ask: str = "0.40") -> BookSnapshot:
    return BookSnapshot("tok", CID, ((D(bid), D("1000")),), ((D(ask), D("1000")),), D("0.01"), 1, 1,
                        tick_known=True)


def order(**kw: object) -> epb.Order:
    base: dict[str, object] = dict(
        client_order_id="co_1", origin=MANUAL, follower_wallet_id="w", asset_id="tok", condition_id=CID,
        side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK, max_slippage_bps=200, tick_size="0.01",
        min_order_size="5", mode=cpb.EXECUTION_MODE_LIVE, routed_time_ns=NOW - 1000)
    base.update(kw)
    return epb.Order(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("o", "reason"), [
    (order(order_type=GTC, size="3", limit_price="0.40"), "BUY_BELOW_MARKET_MINIMUM"),
    (order(order_type=GTC, size="5", limit_price="0.40"), ""),
    (order(order_type=GTC, size="3", limit_price="0.40", min_order_size=""), ""),  # market unknown
    (order(side=SELL, order_type=GTC, size="3", limit_price="0.45"), "SELL_BELOW_MARKET_MINIMUM"),
    (order(side=SELL, order_type=GTC, size="4.999", limit_price="0.45"), "SELL_BELOW_MARKET_MINIMUM"),
    (order(side=SELL, order_type=GTC, size="5", limit_price="0.45"), ""),
    # the minimum in shares is documented for limit orders: a marketable SELL (an exit) is sent, the venue decides
    (order(side=SELL, origin=TRIGGER, size="3", reference_price="0.39"), ""),
    (order(side=SELL, origin=TRIGGER, size="3", reference_price="0.39", min_order_size="0"), ""),
    (order(side=SELL, origin=COPY, size="3", subscription_id="s", leader_trade_id="t"), ""),
])
def test_an_order_sized_below_the_market_minimum_is_refused(o: epb.Order, reason: str) -> None:
    p = prepare(o, book(), RULES, NOW)
    if reason:
        assert (p.life.state, p.life.reason) == (State.REJECTED, reason) and p.ticket.request is None
    else:
        assert p.life.state is State.SUBMITTING, (p.life.reason, p.life.detail)


@pytest.mark.parametrize(("amount", "refused"), [("0.99", True), ("1", False), ("0", True), ("2.5", False)])
def test_marketable_minimum_refusal(amount: str, refused: bool) -> None:
    assert (marketable_minimum_refusal(D(amount)) is not None) is refused


@pytest.mark.parametrize(("o", "reason"), [
    # $0.50 at 0.05 buys 10 shares (>= 5), but a marketable BUY needs $1
    (order(amount_usd="0.50", max_slippage_bps=0), "BUY_BELOW_MARKET_MINIMUM"),
    (order(amount_usd="0.999", max_slippage_bps=0), "BUY_BELOW_MARKET_MINIMUM"),  # $0.99 once floored
    (order(amount_usd="0.50", max_slippage_bps=0, order_type=FOK), "BUY_BELOW_MARKET_MINIMUM"),
    (order(amount_usd="0.50", max_slippage_bps=0, min_order_size=""), "BUY_BELOW_MARKET_MINIMUM"),
    (order(amount_usd="1", max_slippage_bps=0), ""),
    # a resting BUY of $0.50 is not marketable: only the shares minimum holds it
    (order(size="12.5", order_type=GTC, limit_price="0.04"), ""),
])
def test_a_marketable_buy_below_one_dollar_is_refused(o: epb.Order, reason: str) -> None:
    p = prepare(o, book("0.04", "0.05"), RULES, NOW)
    if reason:
        assert (p.life.state, p.life.reason) == (State.REJECTED, reason) and p.ticket.request is None
    else:
        assert p.life.state is State.SUBMITTING, (p.life.reason, p.life.detail)


@pytest.mark.parametrize(("amount", "sent"), [
    ("10.005", D("10")), ("10.019", D("10.01")), ("10.01", D("10.01")), ("2.0999", D("2.09"))])
def test_a_usd_amount_is_floored_to_the_cent(amount: str, sent: D) -> None:
    p = prepare(order(amount_usd=amount), book(), RULES, NOW)
    assert p.ticket.request is not None and p.ticket.request.amount_usd == sent


@pytest.mark.parametrize(("amount", "reason"), [("0.004", "INVALID_ORDER"), ("0.009", "INVALID_ORDER")])
def test_a_usd_amount_below_a_cent_is_refused(amount: str, reason: str) -> None:
    p = prepare(order(amount_usd=amount, min_order_size=""), book(), RULES, NOW)
    assert (p.life.state, p.life.reason) == (State.REJECTED, reason) and p.ticket.request is None


@pytest.mark.parametrize(("o", "sent"), [
    (order(side=SELL, origin=TRIGGER, size="10.005", reference_price="0.39"), D("10")),
    (order(side=SELL, origin=TRIGGER, size="10.129999", reference_price="0.39"), D("10.12")),
    (order(side=SELL, origin=MANUAL, size="7.5", reference_price="0.39"), D("7.5")),
    (order(side=SELL, order_type=GTC, size="6.789", limit_price="0.45"), D("6.78")),
    (order(order_type=GTC, size="6.789", limit_price="0.40"), D("6.78")),
])
def test_a_share_size_is_rounded_down_to_the_hundredth(o: epb.Order, sent: D) -> None:
    p = prepare(o, book(), RULES, NOW)
    assert p.ticket.request is not None and p.ticket.request.size == sent
    assert p.ticket.request.size == p.ticket.request.size.quantize(D("0.01"))


@pytest.mark.parametrize("size", ["0.009", "0.0001"])
def test_a_share_size_below_the_step_is_refused(size: str) -> None:
    p = prepare(order(side=SELL, origin=TRIGGER, size=size, min_order_size=""), book(), RULES, NOW)
    assert (p.life.state, p.life.reason) == (State.REJECTED, "INVALID_ORDER") and p.ticket.request is None
