"""A USD BUY too small for the market's minimum order size at the executor's own limit price is not sent.

The router checks the minimum at the leader's price; the executor buys at best ask + slippage. A leader's
maker fill at 0.30 with the best ask at 0.41 and a minimum of 5 shares lets a $1.60 copy through the router,
which buys at most 1.60 / 0.41 = 3.9 shares: a doomed order (INVALID_ORDER_MIN_SIZE) or a position too
small to sell. The executor refuses it: REJECTED ``BUY_BELOW_MARKET_MINIMUM``, recorded as the copy's skip.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from common.marketstate import BookSnapshot
from services.executor.domain.order_intake import IntakeRules, ShapeCache, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.pricing import BUY_BELOW_MARKET_MINIMUM, buy_minimum_refusal
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb


@pytest.mark.parametrize(("amount", "limit", "min_size", "refused", "detail"), [
    ("1.6", "0.41", "5", True, "$1.6 buys 3.9 shares at limit 0.41 < market minimum 5"),
    ("2.05", "0.41", "5", False, ""),  # exactly 5 shares
    ("2.04", "0.41", "5", True, "$2.04 buys 4.97 shares at limit 0.41 < market minimum 5"),
    ("1.6", "0.30", "5", False, ""),  # 5.33 shares at the leader's price: what the router saw
    # 4.99 / 0.998 = 5 exactly, under a minimum that is not on the share step
    ("4.99", "0.998", "5.0001", True, "$4.99 buys 5 shares at limit 0.998 < market minimum 5.0001"),
    ("0.99", "0.99", "1", False, ""),  # 1 share
    ("0.98", "0.99", "1", True, "$0.98 buys 0.98 shares at limit 0.99 < market minimum 1"),
    ("0.5", "0.01", "15", False, ""),  # 50 shares at the bottom of the range
    ("1.6", "0.41", None, False, ""),  # minimum unknown (no market info): not refused
    ("1.6", "0.41", "0", False, ""),
    ("1.6", "0.41", "-1", False, ""),
    ("1.6", "0", "5", False, ""),  # no price to size at: not this check's call
])
def test_buy_minimum_refusal(amount: str, limit: str, min_size: str | None, refused: bool, detail: str) -> None:
    got = buy_minimum_refusal(D(amount), D(limit), D(min_size) if min_size is not None else None)
    assert got == ((BUY_BELOW_MARKET_MINIMUM, detail) if refused else None)


ASKS = ((D("0.41"), D("100")), (D("0.50"), D("1000")))
BIDS = ((D("0.29"), D("100")),)
BOOK = BookSnapshot("tok", "0xc", BIDS, ASKS, D("0.01"), 1, 1)
NOW = 10**18
RULES = IntakeRules(live_configured=True)


def order(**kw: object) -> epb.Order:
    base: dict[str, object] = dict(
        client_order_id="co_1", origin=epb.ORDER_ORIGIN_COPY, follower_wallet_id="w", asset_id="tok",
        side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK, amount_usd="1.6", reference_price="0.30",
        max_slippage_bps=200, tick_size="0.01", min_order_size="5", mode=cpb.EXECUTION_MODE_LIVE,
        routed_time_ns=NOW - 1000)
    base.update(kw)
    return epb.Order(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("o", "book", "state", "reason"), [
    # limit 0.41 × 1.02 = 0.4182 → 0.41: 3.9 shares < 5
    (order(), BOOK, State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    (order(amount_usd="2.05"), BOOK, State.SUBMITTING, ""),  # 5 shares at 0.41
    (order(min_order_size=""), BOOK, State.SUBMITTING, ""),  # market unknown to the router: not checked
    (order(min_order_size="0"), BOOK, State.SUBMITTING, ""),
    (order(min_order_size="abc"), BOOK, State.REJECTED, "INVALID_ORDER"),
    (order(mode=cpb.EXECUTION_MODE_PAPER), BOOK, State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    (order(order_type=epb.ORDER_TYPE_FOK), BOOK, State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    # a resting BUY carries its size in shares (sized by the sender, not here)
    (order(order_type=epb.ORDER_TYPE_GTC, size="10"), BOOK, State.SUBMITTING, ""),
    # no book: the limit comes from the reference price (0.30 × 1.02 → 0.30): 5.33 shares
    (order(), None, State.SUBMITTING, ""),
    (order(reference_price="0.40"), None, State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    # a given limit prices it: 1.6 / 0.41 = 3.9
    (order(limit_price="0.41"), None, State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    # not only copies: a doomed BUY is doomed whoever sent it
    (order(origin=epb.ORDER_ORIGIN_MANUAL), BOOK, State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    # a thin book is reported as such first
    (order(amount_usd="100"), BOOK, State.REJECTED, "INSUFFICIENT_DEPTH"),
    # SELLs are sized in shares (the router and the fraction sizing check them)
    (order(side=cpb.SIDE_SELL, amount_usd="", size="3"), BOOK, State.SUBMITTING, ""),
])
def test_prepare_checks_the_buy_minimum_at_its_limit(o: epb.Order, book: BookSnapshot | None, state: State,
                                                     reason: str) -> None:
    p = prepare(o, book, RULES, NOW)
    assert (p.life.state, p.life.reason) == (state, reason), p.life.detail
    assert p.refused == (state is State.REJECTED)
    if reason == BUY_BELOW_MARKET_MINIMUM:
        assert "< market minimum 5" in p.life.detail and p.ticket.request is None


def test_orders_alike_but_for_their_minimum_do_not_share_an_outcome() -> None:
    """prepare() memoizes the outcome of orders alike in a batch: the minimum is part of what makes them alike."""
    shapes: ShapeCache = {}
    unknown = prepare(order(client_order_id="co_a", min_order_size=""), BOOK, RULES, NOW, {}, shapes)
    known = prepare(order(client_order_id="co_b"), BOOK, RULES, NOW, {}, shapes)
    assert (unknown.life.state, known.life.state) == (State.SUBMITTING, State.REJECTED)


@pytest.mark.integration
async def test_executor_does_not_send_a_buy_below_the_market_minimum_at_the_best_ask(harness: Harness,
                                                                                    db_url: str) -> None:
    """Driven through the executor (routed stream, intake, journal) with the router's $1.60 copy of a maker
    fill at 0.30: refused with a recorded reason, never POSTed, counted once as the subscription's skip; a
    copy large enough at the ask goes out."""
    await harness.set_book(ASSET, [("0.29", "100")], [("0.41", "100"), ("0.50", "1000")])
    await harness.start_executor()
    small = make_order(1, amount_usd="1.6", reference_price="0.30", min_order_size="5")
    enough = make_order(2, amount_usd="2.5", reference_price="0.30", min_order_size="5")
    await harness.route(small, enough)
    await eventually(lambda: harness.all_terminal([small, enough]), timeout_s=15)

    refused = await harness.terminal(small.client_order_id)
    assert refused is not None and refused.type == epb.ORDER_EVENT_TYPE_REJECTED
    assert (refused.reason, refused.detail) == (
        BUY_BELOW_MARKET_MINIMUM, "$1.6 buys 3.9 shares at limit 0.41 < market minimum 5")
    assert harness.fake.posts_for(small.client_order_id) == []
    [post] = harness.fake.posts_for(enough.client_order_id)
    assert post.body is not None and post.body["limitPrice"] == "0.41"  # 6.09 shares: sent

    assert rows(db_url, "SELECT state, reason FROM orders WHERE client_order_id = %s", small.client_order_id) == [
        ("REJECTED", BUY_BELOW_MARKET_MINIMUM)]
    skip = (small.subscription_id, small.leader_trade_id, small.follower_wallet_id, BUY_BELOW_MARKET_MINIMUM)
    assert rows(db_url, "SELECT subscription_id, leader_trade_id, follower_wallet_id, reason FROM copy_skips") == [skip]
    assert rows(db_url, "SELECT skipped FROM subscription_stats WHERE subscription_id = %s",
                small.subscription_id) == [(1,)]

    await harness.route(small)  # a replay: nothing new, the skip is counted once
    await eventually(lambda: harness.executor is not None and harness.executor.admission.duplicates >= 1)
    assert harness.fake.posts_for(small.client_order_id) == []
    assert [e.type for e in await harness.events_of(small.client_order_id)] == [epb.ORDER_EVENT_TYPE_REJECTED]
    assert rows(db_url, "SELECT skipped FROM subscription_stats WHERE subscription_id = %s",
                small.subscription_id) == [(1,)]
