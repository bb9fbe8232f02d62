"""A copy BUY that can fill fewer shares than the market minimum within its limit is skipped (INSUFFICIENT_DEPTH, a
copy skip: a position never sellable). A copy SELL is not: what it leaves unsold is left either way, and a copy of
the leader's exit that sells nothing is worse. Exits and resting orders are not held to depth."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from common.marketstate import BookSnapshot
from services.executor.domain.copy_skips import SKIP_REASONS
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.pricing import judge_depth, quote_depth
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

NOW = 10**18
CID = "0x" + "ab" * 32
RULES = IntakeRules(live_configured=True)
TICK = D("0.01")
COPY, TRIGGER = epb.ORDER_ORIGIN_COPY, epb.ORDER_ORIGIN_TRIGGER


def levels(*pairs: tuple[str, str]) -> tuple[tuple[D, D], ...]:
    return tuple((D(p), D(s)) for p, s in pairs)


def order(**kw: object) -> epb.Order:
    base: dict[str, object] = dict(
        client_order_id="co_1", origin=COPY, subscription_id="s", leader_trade_id="t", follower_wallet_id="w",
        asset_id="tok", condition_id=CID, side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK, max_slippage_bps=200,
        tick_size="0.01", min_order_size="5", mode=cpb.EXECUTION_MODE_LIVE, routed_time_ns=NOW - 1000)
    base.update(kw)
    return epb.Order(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("buying", "quantity", "opposite", "min_size", "ok"), [
    # BUY $2.10: 3 shares at 0.40 within the limit 0.40 ($1.20 >= half), fewer than 5
    (True, "2.10", levels(("0.40", "3"), ("0.60", "1000")), "5", False),
    (True, "2.10", levels(("0.40", "5"), ("0.60", "1000")), "5", True),
    (True, "2.10", levels(("0.40", "3"), ("0.60", "1000")), None, True),  # market unknown
    # a SELL is not held to the minimum: what it leaves unsold is left either way (3 of 6 sold beats none)
    (False, "6", levels(("0.50", "3"), ("0.30", "1000")), "5", True),
    (False, "10", levels(("0.50", "5"), ("0.30", "1000")), "5", True),
    (False, "6", levels(("0.50", "6"), ("0.30", "1000")), "5", True),
    (False, "6", levels(("0.50", "100")), "5", True),
    (False, "6", levels(("0.50", "3"), ("0.30", "1000")), "0", True),
])
def test_judge_depth_holds_a_copy_to_the_market_minimum(buying: bool, quantity: str, opposite: object,
                                                        min_size: str | None, ok: bool) -> None:
    q = quote_depth(buying=buying, opposite=opposite, tick=TICK, max_slippage_bps=200)  # type: ignore[arg-type]
    d = judge_depth(q, buying=buying, quantity=D(quantity), tick=TICK,
                    min_size=D(min_size) if min_size is not None else None)
    assert d.ok is ok and d.reason == ("" if ok else "INSUFFICIENT_DEPTH"), d.detail


THIN_ASKS = BookSnapshot("tok", CID, levels(("0.39", "1000")), levels(("0.40", "3"), ("0.60", "1000")), TICK, 1, 1,
                         tick_known=True)
THIN_BIDS = BookSnapshot("tok", CID, levels(("0.50", "3"), ("0.30", "1000")), levels(("0.51", "1000")), TICK, 1, 1,
                         tick_known=True)
SELL = {"side": cpb.SIDE_SELL, "reference_price": "0.50"}


@pytest.mark.parametrize(("o", "book", "reason"), [
    (order(amount_usd="2.10"), THIN_ASKS, "INSUFFICIENT_DEPTH"),
    (order(size="6", **SELL), THIN_BIDS, ""),  # a copy of the leader's exit sells what the book takes
    # an exit goes out for whatever fills, a resting copy rests for the rest
    (order(size="6", origin=TRIGGER, **SELL), THIN_BIDS, ""),
    (order(size="6", order_type=epb.ORDER_TYPE_GTC, limit_price="0.50", **SELL), THIN_BIDS, ""),
    (order(amount_usd="2.10", min_order_size=""), THIN_ASKS, ""),
])
def test_a_copy_buy_that_could_not_reach_the_market_minimum_is_skipped(o: epb.Order, book: BookSnapshot,
                                                                        reason: str) -> None:
    p = prepare(o, book, RULES, NOW)
    if reason:
        assert (p.life.state, p.life.reason) == (State.REJECTED, reason) and p.ticket.request is None
        assert reason in SKIP_REASONS and "market minimum" in p.life.detail
    else:
        assert p.life.state is State.SUBMITTING, (p.life.reason, p.life.detail)
