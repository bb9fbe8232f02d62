"""The operator ceiling per order (TT_MAX_ORDER_USD) at the executor: any order worth more is refused REJECTED
MAX_ORDER_USD_EXCEEDED, SubmitOrder included; a router's cut is carried into the order's detail."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from common.marketstate import BookSnapshot
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.domain.sell_sizing import ceiling_price
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order
from tests.executor.flip import ASKS, BIDS, SUB, sell_order
from tests.executor.test_paper_and_intake import BOOK, NOW, order
from tests.helpers import eventually, internal_channel
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

D = Decimal
CAP = IntakeRules(live_configured=True, max_order_usd=D("100"))
DEEP = BookSnapshot("tok", "0xc", ((D("0.49"), D("10000")),), ((D("0.50"), D("10000")),), D("0.01"), 1, 1)
SELL = {"side": cpb.SIDE_SELL, "amount_usd": ""}
MANUAL = {"origin": epb.ORDER_ORIGIN_MANUAL}


@pytest.mark.parametrize(("o", "book", "refused"), [
    (order(amount_usd="100"), DEEP, False),  # at the ceiling
    (order(amount_usd="100.01"), DEEP, True),
    (order(amount_usd="100.01", origin=epb.ORDER_ORIGIN_MANUAL), BOOK, True),
    (order(amount_usd="100.01", origin=epb.ORDER_ORIGIN_TRIGGER, reference_price="0.5"), None, True),
    (order(amount_usd="5000", reference_price="0.5"), None, True),  # no book: still refused
    # a manual SELL is worth its size × its limit (0.49 less 2 %: 0.49 on the grid): 204 × 0.49 = 99.96, 205: 100.45
    (order(**SELL, **MANUAL, size="204"), DEEP, False),
    (order(**SELL, **MANUAL, size="205"), DEEP, True),
    (order(**SELL, **MANUAL, size="1000", limit_price="0.01", order_type=epb.ORDER_TYPE_GTC), None, False),  # $10
    (order(**SELL, **MANUAL, size="1000", limit_price="0.2", order_type=epb.ORDER_TYPE_GTC), None, True),  # $200
    # a GTC BUY sized in shares: size × limit
    (order(amount_usd="", size="300", limit_price="0.3", order_type=epb.ORDER_TYPE_GTC), None, False),  # $90
    (order(amount_usd="", size="400", limit_price="0.3", order_type=epb.ORDER_TYPE_GTC), None, True),  # $120
])
def test_an_order_worth_more_than_the_ceiling_is_refused(o: epb.Order, book: object, refused: bool) -> None:
    p = prepare(o, book, CAP, NOW)  # type: ignore[arg-type]
    if refused:
        assert (p.life.state, p.life.reason) == (State.REJECTED, "MAX_ORDER_USD_EXCEEDED")
        assert "TT_MAX_ORDER_USD $100" in p.life.detail and p.ticket.request is None
    else:
        assert p.life.state is State.SUBMITTING, (p.life.reason, p.life.detail)
    assert prepare(o, book, IntakeRules(live_configured=True), NOW).life.reason != "MAX_ORDER_USD_EXCEEDED"


@pytest.mark.parametrize("origin", [epb.ORDER_ORIGIN_TRIGGER, epb.ORDER_ORIGIN_COPY])
def test_an_exit_above_the_ceiling_is_cut_to_it_never_refused(origin: int) -> None:
    p = prepare(order(**SELL, size="205", origin=origin), DEEP, CAP, NOW)
    assert p.life.state is State.SUBMITTING and p.ticket.request is not None
    assert p.ticket.request.size == D("204.08")  # $100 at the limit 0.49
    assert p.life.detail.startswith("MAX_ORDER_USD: 205 shares")


@pytest.mark.parametrize(("size", "min_size", "refused"), [
    ("205", "204", ""),  # cut to 204.08 shares: at or above the minimum
    ("205", "205", "MAX_ORDER_USD_EXCEEDED"),  # what the ceiling sells is below the market minimum
    ("204", "205", ""),  # not cut: a marketable exit's minimum is the venue's to check (documented for limits)
])
def test_an_exit_cut_below_the_market_minimum_is_refused(size: str, min_size: str, refused: str) -> None:
    p = prepare(order(**SELL, size=size, min_order_size=min_size), DEEP, CAP, NOW)
    if refused:
        assert (p.life.state, p.life.reason) == (State.REJECTED, refused)
        assert "market minimum" in p.life.detail and p.ticket.request is None
    else:
        assert p.life.state is State.SUBMITTING, (p.life.reason, p.life.detail)


@pytest.mark.parametrize(("held", "bid", "sent"), [
    ("5000", "0.41", "2439.02"),  # the router cut 2,500 shares ($1,000 at 0.40): worth $1,025 at the limit 0.41
    ("5000", "0.45", "2222.22"),
    ("2400", "0.42", "2380.95"),  # not cut by the router ($960 at 0.40): $1,008 at the limit 0.42
    ("2400", "0.40", "2400"),
])
def test_a_copied_exit_is_sent_when_the_bid_rose_above_the_leaders_price(held: str, bid: str, sent: str) -> None:
    """The leader sells everything at 0.40; by the copy's turn the bid is higher, so the limit (the bid less the
    slippage, on the grid) values the router's shares above the ceiling: the exit is cut again, not lost."""
    from common.routed import expand
    from services.router.domain.decide import route
    from services.router.domain.model import OrderIntent, Side
    from services.router.outbound import build_routed, order_template
    from tests.router.factories import NOW_MS, follower, market, policy, state, trade
    from tradingtools.common.v1 import common_pb2
    from tradingtools.market.v1 import market_pb2 as mpb

    ceiling = D("1000")
    tr = trade(side=Side.SELL, price=D("0.40"), size=D(held))
    f = follower()
    [d] = route(tr, [f], market(), {"w_1": state(held_size=D(held))}, D(held), policy(max_order_usd=ceiling))
    assert isinstance(d, OrderIntent) and d.size is not None and d.size * D("0.40") <= ceiling
    event = mpb.LeaderTradeEvent(id=tr.id, wallet=tr.wallet, asset_id=tr.asset_id, condition_id=tr.condition_id,
                                 side=cpb.SIDE_SELL, price="0.40", size=held, venue_time_ms=NOW_MS - 2000,
                                 activity_type=mpb.ACTIVITY_TYPE_TRADE)
    [o] = expand(build_routed(event, [d], {f.subscription_id: f},
                              order_template(event, market(), NOW_MS * 1_000_000, common_pb2.TraceContext()))).orders
    b = D(bid)
    book = BookSnapshot(o.asset_id, o.condition_id, ((b, D("100000")),), ((b + D("0.01"), D("100000")),), D("0.01"),
                        NOW_MS, NOW_MS)
    p = prepare(o, book, IntakeRules(live_configured=True, max_order_usd=ceiling), NOW_MS * 1_000_000)
    assert p.life.state is State.SUBMITTING, (p.life.reason, p.life.detail)
    assert p.ticket.request is not None and p.ticket.request.size == D(sent)
    assert p.ticket.request.size * p.ticket.request.limit_price <= ceiling


def test_the_routers_cut_is_in_the_orders_detail() -> None:
    note = "MAX_ORDER_USD: $2500 cut to the operator ceiling $100"
    p = prepare(order(amount_usd="100", sizing_note=note, origin=epb.ORDER_ORIGIN_MANUAL), BOOK, CAP, NOW)
    assert p.life.state is State.SUBMITTING and p.life.detail == note
    p = prepare(order(amount_usd="100", sizing_note=note, reference_price="0.5"), None, CAP, NOW)
    assert p.life.detail == f"{note}; no book: limit from reference price 0.5"


@pytest.mark.parametrize(("reference", "bid", "price"), [
    ("0.5", D("0.6"), D("0.6")), ("0.5", D("0.4"), D("0.5")), ("", D("0.4"), D("0.4")), ("", None, D("0")),
    ("x", None, D("0")), ("NaN", D("0.3"), D("0.3"))])
def test_a_sell_sized_on_the_position_is_held_to_the_ceiling_at_the_higher_price(
        reference: str, bid: Decimal | None, price: Decimal) -> None:
    assert ceiling_price(reference, bid) == price


@pytest.mark.integration
async def test_submit_order_above_the_ceiling_is_rejected_and_never_posted(harness: Harness) -> None:
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "100000")])
    running = await harness.start_executor(TT_MAX_ORDER_USD="50")
    big = make_order(1, origin=epb.ORDER_ORIGIN_MANUAL, amount_usd="50.01", leader_trade_id="")
    exit_ = make_order(2, origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL, amount_usd="", size="200",
                       limit_price="0.30", order_type=epb.ORDER_TYPE_GTC, leader_trade_id="")  # $100 at 0.50
    ok = make_order(3, origin=epb.ORDER_ORIGIN_MANUAL, amount_usd="50", leader_trade_id="")
    async with internal_channel(running.server.port) as channel:
        stub = egrpc.ExecutorServiceStub(channel)
        reply = await stub.SubmitOrder(epb.SubmitOrderRequest(order=big))
        assert (reply.last_event.type, reply.last_event.reason) == (epb.ORDER_EVENT_TYPE_REJECTED,
                                                                    "MAX_ORDER_USD_EXCEEDED")
        # an exit is never refused by the ceiling (the position would stay open to the loss): it is cut to it
        reply = await stub.SubmitOrder(epb.SubmitOrderRequest(order=exit_))
        assert reply.last_event.type != epb.ORDER_EVENT_TYPE_REJECTED
        await stub.SubmitOrder(epb.SubmitOrderRequest(order=ok))
    await eventually(lambda: harness.terminal(ok.client_order_id), timeout_s=20)
    assert harness.fake.post_counts() == {ok.client_order_id: 1, exit_.client_order_id: 1}
    [posted] = harness.fake.posts_for(exit_.client_order_id)
    # $50 at the reference price 0.50 (above the best bid 0.49 and the limit): as a SELL sized here is held
    assert posted.body is not None and posted.body["size"] == "100"
    routed = make_order(4, amount_usd="75")  # a copy that reached the executor above it is refused too
    await harness.route(routed)
    final = await eventually(lambda: harness.terminal(routed.client_order_id), timeout_s=20)
    assert (final.type, final.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "MAX_ORDER_USD_EXCEEDED")
    assert harness.fake.posts_for(routed.client_order_id) == []


@pytest.mark.integration
async def test_a_sell_sized_on_the_position_is_cut_to_the_ceiling(harness: Harness, db_url: str) -> None:
    """The leader closed while the copy BUY was in flight: the SELL of everything held is worth more than the
    ceiling, so it is cut to the shares the ceiling sells (as the router cuts a sized SELL), the cut noted."""
    await harness.set_book(ASSET, BIDS, ASKS)
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, subscription_id) VALUES ('w_cap', %s, %s, '0xa', 100, 0.4, 40, %s)",
                     (ASSET, CONDITION, SUB))
    await harness.start_executor(TT_MAX_ORDER_USD="20")
    sell = sell_order(5, "1", follower_wallet_id="w_cap", reference_price="0.45")
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    [post] = harness.fake.posts_for(sell.client_order_id)
    assert post.body is not None and D(post.body["size"]) == D("40.81")  # $20 / 0.49 (the best bid) rounded down
    events = await harness.events_of(sell.client_order_id)
    assert any(e.detail.startswith("MAX_ORDER_USD: 100 shares") for e in events), [e.detail for e in events]
