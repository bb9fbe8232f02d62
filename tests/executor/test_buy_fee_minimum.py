"""A copy BUY must hold the market minimum at the executor's own limit once the venue took its taker fee in shares.

The router checks the minimum (fee counted) at the leader's price + slippage; the executor prices the copy at its
book's best ask + slippage. A leader buying at 0.50 who takes the asks up leaves the best ask at 0.52: the router's
$2.69 copy (fee rate 0.1, exponent 1, minimum 5 shares) gets the limit 0.53 and buys 5.07 shares there, of which the
venue keeps 0.24: 4.83 held, below the minimum, so its exit and every TP/SL SELL could never be posted. The executor
refuses it: REJECTED ``BUY_BELOW_MARKET_MINIMUM``, never sent.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.marketstate import BookSnapshot
from common.takerfee import TakerFee
from services.executor.domain.order_intake import IntakeRules, ShapeCache, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.pricing import BUY_BELOW_MARKET_MINIMUM, buy_minimum_refusal
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
FEE = TakerFee(D("0.1"), D(1))  # taker_base_fee 1000 bps read as the rate at exponent 1


@pytest.mark.parametrize(("amount", "limit", "min_size", "fee", "detail"), [
    # the review's copy: 5.07 shares at 0.53, the fee takes 5.07 × 0.1 × 0.47 = 0.23829
    ("2.69", "0.53", "5", FEE, "$2.69 buys 5.07 shares at limit 0.53, 4.83171 once the taker fee (rate 0.1, "
                              "exponent 1) takes 0.23829 < market minimum 5"),
    ("2.69", "0.53", "5", None, None),  # no fee known: as before
    ("2.69", "0.53", "5", TakerFee(D(0), D(1)), None),  # a fee-free market
    ("2.79", "0.53", "5", FEE, None),  # 5.26 shares keep 5.01278
    ("2.78", "0.53", "5", FEE, "$2.78 buys 5.24 shares at limit 0.53, 4.99372 once the taker fee (rate 0.1, "
                              "exponent 1) takes 0.24628 < market minimum 5"),
    ("50", "0.53", "5", FEE, None),
    ("2.69", "0.53", None, FEE, None),  # minimum unknown: not checked
    ("2.69", "0.53", "0", FEE, None),
    # a schedule at exponent 2: 5.07 × 0.25 × (0.53 × 0.47)² / 0.53 = 0.14839529… rounded up to the token unit
    ("2.69", "0.53", "5", TakerFee(D("0.25"), D(2)), "$2.69 buys 5.07 shares at limit 0.53, 4.921604 once the taker "
                                                     "fee (rate 0.25, exponent 2) takes 0.148396 < market minimum 5"),
    # the fee-blind refusal is unchanged, fee or not
    ("1.6", "0.41", "5", FEE, "$1.6 buys 3.9 shares at limit 0.41 < market minimum 5"),
])
def test_buy_minimum_refusal_counts_the_taker_fee(amount: str, limit: str, min_size: str | None,
                                                  fee: TakerFee | None, detail: str | None) -> None:
    got = buy_minimum_refusal(D(amount), D(limit), D(min_size) if min_size is not None else None, fee)
    assert got == ((BUY_BELOW_MARKET_MINIMUM, detail) if detail is not None else None)


def _kept(shares: Decimal, price: Decimal, fee: TakerFee) -> Decimal:
    return shares - fee.shares(shares, price)


@given(amount=st.integers(100, 100_000), limit=st.integers(2, 99), better=st.integers(1, 98),
       fee=st.sampled_from([FEE, TakerFee(D("0.05"), D(1)), TakerFee(D("0.07"), D(1)), TakerFee(D("0.25"), D(2)),
                            TakerFee(D("0.99"), D(1)), TakerFee(D("0.99"), D(10))]))
def test_the_limit_is_the_worst_case_of_a_fill(amount: int, limit: int, better: int, fee: TakerFee) -> None:
    """A USD BUY filled at a better price than its limit buys ``amount / price`` shares and keeps at least what the
    check counts at the limit (fees of exponent ≥ 1: kept = A/p − A·rate·p^(e−2)·(1 − p)^e falls as p rises)."""
    usd, top = D(amount) / 100, D(limit) / 100
    price = D(min(better, limit)) / 100
    counted = _kept((usd / top).quantize(D("0.01"), rounding=ROUND_DOWN), top, fee)
    assert _kept(usd / price, price, fee) >= counted


ASKS = ((D("0.52"), D("100")), (D("0.60"), D("1000")))  # the leader took the asks at 0.50
BIDS = ((D("0.48"), D("100")),)
BOOK = BookSnapshot("tok", "0xc", BIDS, ASKS, D("0.01"), 1, 1)
NOW = 10**18
RULES = IntakeRules(live_configured=True)


def order(**kw: object) -> epb.Order:
    base: dict[str, object] = dict(
        client_order_id="co_1", origin=epb.ORDER_ORIGIN_COPY, follower_wallet_id="w", asset_id="tok",
        side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK, amount_usd="2.69", reference_price="0.50",
        max_slippage_bps=200, tick_size="0.01", min_order_size="5", taker_fee_rate="0.1", taker_fee_exponent="1",
        mode=cpb.EXECUTION_MODE_LIVE, routed_time_ns=NOW - 1000)
    base.update(kw)
    return epb.Order(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("o", "state", "reason"), [
    # limit 0.52 × 1.02 = 0.5304 → 0.53: 5.07 shares, 4.83171 kept
    (order(), State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    (order(mode=cpb.EXECUTION_MODE_PAPER), State.REJECTED, BUY_BELOW_MARKET_MINIMUM),
    (order(amount_usd="2.79"), State.SUBMITTING, ""),  # 5.26 shares, 5.01278 kept
    (order(taker_fee_rate="", taker_fee_exponent=""), State.SUBMITTING, ""),  # no fee known (a manual order)
    (order(origin=epb.ORDER_ORIGIN_MANUAL, taker_fee_rate="", taker_fee_exponent=""), State.SUBMITTING, ""),
    (order(taker_fee_rate="0"), State.SUBMITTING, ""),
    # a fee field not understood is no fee known: never a refusal of the copy
    (order(taker_fee_rate="abc"), State.SUBMITTING, ""),
    (order(taker_fee_exponent=""), State.SUBMITTING, ""),
    (order(taker_fee_rate="1.5"), State.SUBMITTING, ""),
    (order(taker_fee_exponent="NaN"), State.SUBMITTING, ""),
])
def test_prepare_refuses_a_copy_that_keeps_too_few_shares_at_its_limit(o: epb.Order, state: State,
                                                                       reason: str) -> None:
    p = prepare(o, BOOK, RULES, NOW)
    assert (p.life.state, p.life.reason) == (state, reason), p.life.detail
    if state is State.REJECTED:
        assert p.ticket.request is None
        assert p.life.detail.endswith("4.83171 once the taker fee (rate 0.1, exponent 1) takes 0.23829 "
                                      "< market minimum 5")
    else:
        assert p.ticket.request is not None and p.ticket.request.limit_price == D("0.53")


def test_orders_alike_but_for_their_fee_do_not_share_an_outcome() -> None:
    shapes: ShapeCache = {}
    unknown = prepare(order(client_order_id="co_a", taker_fee_rate=""), BOOK, RULES, NOW, {}, shapes)
    known = prepare(order(client_order_id="co_b"), BOOK, RULES, NOW, {}, shapes)
    exponent = prepare(order(client_order_id="co_c", taker_fee_exponent="2"), BOOK, RULES, NOW, {}, shapes)
    assert [p.life.state for p in (unknown, known, exponent)] == [State.SUBMITTING, State.REJECTED,
                                                                  State.SUBMITTING]


@pytest.mark.integration
async def test_executor_does_not_send_a_copy_that_keeps_too_few_shares_once_the_fee_is_taken(
        harness: Harness, db_url: str) -> None:
    """Through the executor (routed stream, intake, journal): the review's copy is refused with its reason and
    never POSTed; one large enough to keep the minimum goes out at the same limit."""
    await harness.set_book(ASSET, [("0.48", "100")], [("0.52", "100"), ("0.60", "1000")])
    await harness.start_executor()
    fee = dict(taker_fee_rate="0.1", taker_fee_exponent="1", min_order_size="5", reference_price="0.50")
    small = make_order(1, amount_usd="2.69", **fee)
    enough = make_order(2, amount_usd="2.79", **fee)
    await harness.route(small, enough)
    await eventually(lambda: harness.all_terminal([small, enough]), timeout_s=15)

    refused = await harness.terminal(small.client_order_id)
    assert refused is not None and refused.type == epb.ORDER_EVENT_TYPE_REJECTED
    assert refused.reason == BUY_BELOW_MARKET_MINIMUM and "taker fee" in refused.detail
    assert harness.fake.posts_for(small.client_order_id) == []
    [post] = harness.fake.posts_for(enough.client_order_id)
    assert post.body is not None and post.body["limitPrice"] == "0.53"
    assert rows(db_url, "SELECT state, reason FROM orders WHERE client_order_id = %s", small.client_order_id) == [
        ("REJECTED", BUY_BELOW_MARKET_MINIMUM)]
