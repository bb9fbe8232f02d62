"""The executor end to end on real PostgreSQL, Redis, gRPC and the Insiders fake."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common import reservations
from common.marketstate import (
    WATCH_CHANNEL,
    WATCH_POSITIONS,
    MarketInfo,
    WatchChange,
    market_key,
    parse_watch_change,
    write_market,
)
from services.executor.adapters.breaker_gate import breaker_key
from tests.executor.conftest import ASSET, CONDITION, TOKEN, Harness, make_order, rows
from tests.helpers import eventually, internal_channel
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]


async def test_each_order_is_posted_once_filled_and_booked(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    watch = harness.redis.pubsub()
    await watch.subscribe(WATCH_CHANNEL)
    await harness.start_executor()
    orders = [make_order(i, amount_usd=str(5 + i)) for i in range(6)]
    await harness.route(*orders)
    await eventually(lambda: harness.all_terminal(orders), timeout_s=15)

    counts = harness.fake.post_counts()
    for o in orders:
        posts = harness.fake.posts_for(o.client_order_id)
        assert counts[o.client_order_id] == 1 and posts[0].idempotency_key == o.client_order_id
        assert posts[0].body is not None and posts[0].body["amountUsd"] == o.amount_usd
        assert posts[0].body["limitPrice"] == "0.51" and posts[0].body["orderType"] == "FAK"
        kinds = [e.type for e in await harness.events_of(o.client_order_id)]
        assert kinds == [epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
        filled = await harness.terminal(o.client_order_id)
        assert filled is not None and D(filled.filled_size) > 0 and filled.venue == cpb.VENUE_INSIDERS
        assert D(filled.copy_latency_ms) > 0

    fills = rows(db_url, "SELECT order_id, size, price, notional_usd, venue, copy_latency_ms, subscription_id "
                          "FROM fills ORDER BY order_id")
    assert len(fills) == 6 and all(f[4] == "INSIDERS" and f[5] > 0 for f in fills)
    order0 = harness.fake.order(orders[0].client_order_id)
    assert order0 is not None
    assert fills[0][1] == order0.filled_size and fills[0][2] == order0.avg_price
    pos = rows(db_url, "SELECT size, cost_usd FROM positions WHERE follower_wallet_id = 'w_0'")
    assert pos == [(order0.filled_size, order0.filled_size * order0.avg_price)]
    stats = rows(db_url, "SELECT copied FROM subscription_stats WHERE subscription_id = 'sub_0'")
    assert stats == [(1,)]
    assert await harness.redis.sismember(WATCH_POSITIONS, ASSET)
    assert rows(db_url, "SELECT count(*) FROM orders WHERE state = 'FILLED'") == [(6,)]
    # the opened position is announced as a difference (ingest applies it without reading the set)
    opened, changes = WatchChange(WATCH_POSITIONS, added=(ASSET,)), []
    for _ in range(20):  # None also answers the subscription's own confirmation
        msg = await watch.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg is not None:
            changes.append(parse_watch_change(msg["data"]))
        if opened in changes:
            break
    assert opened in changes
    await watch.aclose()


async def test_executor_refusals_are_recorded_and_never_posted(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor(live=False, TT_MAX_ORDER_USD="100000")
    live = make_order(1)
    thin = make_order(2, mode=cpb.EXECUTION_MODE_PAPER, amount_usd="10000")
    await harness.route(live, thin)
    await eventually(lambda: harness.terminal(thin.client_order_id), timeout_s=10)
    await eventually(lambda: harness.terminal(live.client_order_id), timeout_s=10)
    assert (await harness.terminal(live.client_order_id)).reason == "LIVE_VENUE_NOT_CONFIGURED"  # type: ignore[union-attr]
    assert (await harness.terminal(thin.client_order_id)).reason == "INSUFFICIENT_DEPTH"  # type: ignore[union-attr]
    assert harness.fake.posts == []
    assert rows(db_url, "SELECT state, reason FROM orders ORDER BY client_order_id") == [
        ("REJECTED", "LIVE_VENUE_NOT_CONFIGURED"), ("REJECTED", "INSUFFICIENT_DEPTH")]
    # the copy declined for the thin book counts as its subscription's skip; the misconfigured one does not
    skips = [(thin.subscription_id, thin.leader_trade_id, thin.follower_wallet_id, "INSUFFICIENT_DEPTH")]
    assert rows(db_url, "SELECT subscription_id, leader_trade_id, follower_wallet_id, reason FROM copy_skips") == skips
    assert rows(db_url, "SELECT subscription_id, skipped FROM subscription_stats") == [(thin.subscription_id, 1)]
    await harness.route(thin)  # a replay is counted once
    await eventually(lambda: harness.executor is not None and harness.executor.admission.duplicates >= 1)
    assert rows(db_url, "SELECT subscription_id, skipped FROM subscription_stats") == [(thin.subscription_id, 1)]


async def test_paper_fill_matches_a_hand_computed_book_walk(harness: Harness, db_url: str) -> None:
    # Asks 0.50 × 100 then 0.51 × 1000; $80 at limit 0.51 (0.50 + 2 %): 100 @ 0.50 = $50, then
    # $30 / 0.51 = 58.82 shares (rounded down) = $29.9982. Fee 100 bps in shares: 1.5882.
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor(live=False, TT_PAPER_FEE_BPS="100")
    o = make_order(1, mode=cpb.EXECUTION_MODE_PAPER, amount_usd="80")
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED and done.venue == cpb.VENUE_PAPER
    assert D(done.filled_size) == D("158.82") and D(done.fee_shares) == D("1.5882")
    assert rows(db_url, "SELECT size, price, notional_usd, venue FROM fills") == [
        (D("158.82"), D("0.50370356"), D("79.9982"), "PAPER")]
    size, cost = rows(db_url, "SELECT size, cost_usd FROM positions")[0]
    assert (size, cost) == (D("158.82") - D("1.5882"), D("79.9982"))
    assert harness.fake.posts == []


async def test_timeout_becomes_unknown_then_resolved_by_query(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.timeout_posts = 1
    harness.fake.faults.timeout_delay_s = 2.0
    await harness.start_executor()
    o = make_order(1)
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    kinds = [e.type for e in await harness.events_of(o.client_order_id)]
    assert kinds == [epb.ORDER_EVENT_TYPE_UNKNOWN, epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED
    assert harness.fake.post_counts() == {o.client_order_id: 1}


async def test_a_timed_out_post_the_venue_never_got_is_sent_again_with_its_key(harness: Harness) -> None:
    """Not found three times while the order is young enough to be worth sending: POSTed again with the same
    Idempotency-Key (the venue answers with the order it has, or takes it now), not LOST."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.lose_posts = 1
    harness.fake.faults.timeout_delay_s = 2.0
    o = make_order(1)
    await harness.start_executor()
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED
    assert harness.fake.post_counts() == {o.client_order_id: 2} and harness.fake.taken_counts() == {
        o.client_order_id: 1}


async def test_not_found_three_times_is_lost_and_releases_the_reservation(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.lose_posts = 1
    harness.fake.faults.timeout_delay_s = 2.0
    o = make_order(1)
    await reservations.reserve(harness.redis, [reservations.Reservation(
        o.client_order_id, o.follower_wallet_id, reservations.USD, CONDITION, 10_000_000, "lt_1")])
    assert (await reservations.read(harness.redis, ["w_1"]))["w_1"].total_usd_micro == 10_000_000
    await harness.start_executor(TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0")  # too old to be sent again
    queries_before = harness.fake.queries
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "VENUE_NOT_FOUND")
    assert harness.fake.queries - queries_before == 3
    assert harness.fake.post_counts() == {o.client_order_id: 1}

    async def released() -> bool:
        return (await reservations.read(harness.redis, ["w_1"]))["w_1"].total_usd_micro == 0
    await eventually(released)
    await eventually(lambda: rows(db_url, "SELECT count(*) FROM order_pending") == [(0,)])  # its release recorded


async def test_5xx_storm_opens_the_breaker_without_duplicates(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.fail_posts = 1000
    # A storm longer than the resubmit window: orders wait at the open breaker, then give up.
    await harness.start_executor(TT_TUNE_EXECUTOR_MAX_SUBMIT_ATTEMPTS="3", TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="1")
    orders = [make_order(i) for i in range(20)]
    await harness.route(*orders)
    await eventually(lambda: harness.all_terminal(orders), timeout_s=20)
    state = await harness.redis.hgetall(breaker_key("insiders"))
    assert state["state"] == "OPEN"
    assert all(n <= 1 for n in harness.fake.taken_counts().values())
    assert harness.fake.orders == {}  # nothing reached the book
    finals = {o.client_order_id: await harness.terminal(o.client_order_id) for o in orders}
    # Every POST got a 5xx and the venue never had them: FAILED (not taken), never LOST.
    assert {(e.type, e.reason) for e in finals.values() if e is not None} <= {
        (epb.ORDER_EVENT_TYPE_FAILED, "VENUE_UNAVAILABLE"), (epb.ORDER_EVENT_TYPE_FAILED, "BREAKER_OPEN")}
    posts_before = len(harness.fake.posts)
    later = [make_order(100 + i) for i in range(5)]
    await harness.route(*later)
    await eventually(lambda: harness.all_terminal(later), timeout_s=10)
    for o in later:  # the breaker stays open past their age bound: they fail without a POST
        e = await harness.terminal(o.client_order_id)
        assert e is not None and (e.type, e.reason) == (epb.ORDER_EVENT_TYPE_FAILED, "BREAKER_OPEN")
    assert len(harness.fake.posts) == posts_before
    orders = rows(db_url, "SELECT state, reason FROM orders")
    assert len(orders) == 25 and all(state == "FAILED" and reason for state, reason in orders)


async def test_5xx_storm_that_opens_the_breaker_loses_no_copy(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, [("0.50", "1000"), ("0.51", "1000")])
    harness.fake.faults.fail_posts = 12  # more than the breaker's threshold: it opens mid-storm
    await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_OPEN_S="0.3", TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="20")
    orders = [make_order(i) for i in range(8)]
    await harness.route(*orders)

    async def opened() -> bool:
        return await harness.redis.hget(breaker_key("insiders"), "state") == "OPEN"
    await eventually(opened, timeout_s=10)
    await eventually(lambda: harness.all_terminal(orders), timeout_s=30)
    for o in orders:
        e = await harness.terminal(o.client_order_id)
        assert e is not None and e.type == epb.ORDER_EVENT_TYPE_FILLED, (o.client_order_id, e)
        created = [p for p in harness.fake.posts_for(o.client_order_id) if p.outcome == "created"]
        assert len(created) == 1  # accepted exactly once at the venue, whatever the re-POSTs
    assert harness.fake.faults.fail_posts == 0
    assert sum(p.outcome == "fault" for p in harness.fake.posts) == 12

    async def closed() -> bool:
        return await harness.redis.hget(breaker_key("insiders"), "state") == "CLOSED"
    await eventually(closed, timeout_s=5)


async def test_rejections_are_final_and_a_stale_tick_invalidates_the_market(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    await write_market(harness.redis, MarketInfo(ASSET, CONDITION, D("0.01"), D("5")))
    codes = ["INVALID_ORDER_MIN_TICK_SIZE", "INVALID_ORDER_MIN_SIZE", "INVALID_ORDER_NOT_ENOUGH_BALANCE",
             "FOK_ORDER_NOT_FILLED_ERROR", "MARKET_CLOSED"]  # a duplicate is settled by query
    harness.fake.faults.reject_queue.extend(codes)
    await harness.start_executor()
    orders = [make_order(i) for i in range(len(codes))]
    for o in orders:  # one at a time so the scripted queue maps in order
        await harness.route(o)
        await eventually(lambda o=o: harness.terminal(o.client_order_id), timeout_s=10)
    finals = [await harness.terminal(o.client_order_id) for o in orders]
    assert [(e.type, e.reason) for e in finals if e] == [(epb.ORDER_EVENT_TYPE_REJECTED, c) for c in codes]
    assert all(n == 1 for n in harness.fake.post_counts().values())
    assert await harness.redis.hmget(market_key(ASSET), "tick_size", "min_order_size", "condition_id") == [
        None, None, CONDITION]  # the rules are read again; the rest stays


async def test_partial_fill_of_a_fak_is_filled_with_what_matched(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.partial_ratio = D("0.5")
    await harness.start_executor()
    o = make_order(1, amount_usd="20")
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED and D(done.filled_size) == D("20")  # 40 shares × 0.5
    assert rows(db_url, "SELECT size FROM fills") == [(D("20"),)]


async def test_venue_failure_after_match_is_failed(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.fail_settlements = 1
    await harness.start_executor()
    o = make_order(1)
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_FAILED, "VENUE_FAILED")


async def test_sell_reduces_the_position_and_books_pnl(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    buy = make_order(1, amount_usd="25")  # 50 shares at 0.50
    await harness.route(buy)
    await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=10)
    sell = make_order(1, client_order_id="co_sell", side=cpb.SIDE_SELL, amount_usd="", size="20")
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED and D(done.avg_price) == D("0.49")
    assert rows(db_url, "SELECT size, avg_price, realized_pnl_usd FROM positions") == [(D("30"), D("0.5"), D("-0.2"))]
    assert rows(db_url, "SELECT copied, realized_pnl_usd FROM subscription_stats WHERE subscription_id = 'sub_1'") == [
        (2, D("-0.2"))]


async def test_submit_order_is_idempotent(harness: Harness) -> None:
    import grpc

    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    channel = internal_channel(running.server.port)
    stub = __import__("tradingtools.execution.v1.execution_pb2_grpc", fromlist=["x"]).ExecutorServiceStub(channel)
    o = make_order(1, origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL, amount_usd="", size="5",
                   trigger_id="trg_1", leader_trade_id="")
    first = await stub.SubmitOrder(epb.SubmitOrderRequest(order=o))
    second = await stub.SubmitOrder(epb.SubmitOrderRequest(order=o))
    assert (first.duplicate, second.duplicate) == (False, True)
    assert first.last_event.client_order_id == o.client_order_id and first.last_event.type != 0
    assert harness.fake.post_counts() == {o.client_order_id: 1}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitOrder(epb.SubmitOrderRequest(order=epb.Order()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # an id of the router's copies' form is refused: the router would count such an order nowhere against the caps
    copy_form = make_order(2, client_order_id="co_" + "ab" * 16, origin=epb.ORDER_ORIGIN_MANUAL)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SubmitOrder(epb.SubmitOrderRequest(order=copy_form))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "client_order_id" in (err.value.details() or "")
    assert copy_form.client_order_id not in harness.fake.post_counts()
    # the stream serves the events too
    call = stub.StreamOrderEvents(epb.StreamOrderEventsRequest(after_cursor="0", consumer="test"))
    first_streamed = await call.read()
    assert first_streamed.event.client_order_id == o.client_order_id
    call.cancel()
    # and in batches: the same events with the same cursors
    batches = stub.StreamOrderEventBatches(epb.StreamOrderEventBatchesRequest(after_cursor="0", consumer="test"))
    first_batch = await batches.read()
    assert first_batch.entries[0] == first_streamed
    batches.cancel()
    await channel.close()


async def test_unauthorized_is_rejected(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor(TT_INSIDERS_API_TOKEN="wrong-" + TOKEN)
    o = make_order(1)
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "VENUE_UNAUTHORIZED")


async def test_resting_gtc_partially_fills_then_fills(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, [("0.50", "40")])
    await harness.start_executor()
    o = make_order(1, order_type=epb.ORDER_TYPE_GTC, amount_usd="", size="100", limit_price="0.50")
    await harness.route(o)

    async def partial() -> bool:
        return any(e.type == epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED for e in await harness.events_of(o.client_order_id))
    await eventually(partial, timeout_s=10)
    harness.fake.fill_resting(o.client_order_id, D("60"), D("0.50"))
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED and D(done.filled_size) == D("100")
    kinds = [e.type for e in await harness.events_of(o.client_order_id)]
    assert kinds == [epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED, epb.ORDER_EVENT_TYPE_FILLED]
    assert sorted(r[0] for r in rows(db_url, "SELECT size FROM fills")) == [D("40"), D("60")]
    assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D("100"), D("50.00"))]
    assert rows(db_url, "SELECT copied FROM subscription_stats") == [(1,)]


async def test_breaker_half_open_probe_closes_it_again(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.fail_posts = 5
    await harness.start_executor(TT_TUNE_EXECUTOR_BREAKER_OPEN_S="0.5", TT_TUNE_EXECUTOR_MAX_SUBMIT_ATTEMPTS="1")
    first = [make_order(i) for i in range(5)]
    await harness.route(*first)

    async def opened() -> bool:
        return await harness.redis.hget(breaker_key("insiders"), "state") == "OPEN"
    await eventually(opened, timeout_s=10)
    # the orders wait out the open period; the half-open probe succeeds and they all go through
    await eventually(lambda: harness.all_terminal(first), timeout_s=10)
    for o in first:
        e = await harness.terminal(o.client_order_id)
        assert e is not None and e.type == epb.ORDER_EVENT_TYPE_FILLED

    async def closed() -> bool:
        return await harness.redis.hget(breaker_key("insiders"), "state") == "CLOSED"
    await eventually(closed, timeout_s=5)
    later = make_order(50)
    await harness.route(later)
    done = await eventually(lambda: harness.terminal(later.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED


async def test_placed_orders_wait_for_confirmation_in_the_tracker_not_in_tasks(harness: Harness) -> None:
    """Orders at the venue awaiting confirmation hold no task of their own; they still end FILLED."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = 1.0  # matched, then confirmed a second later
    running = await harness.start_executor()
    orders = [make_order(i, amount_usd="5") for i in range(10)]
    await harness.route(*orders)
    runner = running.runner
    await eventually(lambda: len(runner.tracker) == 10, timeout_s=10)
    assert not runner.tasks and all(runner.running(o.client_order_id) for o in orders)
    await eventually(lambda: harness.all_terminal(orders), timeout_s=15)
    assert len(runner.tracker) == 0
    for o in orders:
        kinds = [e.type for e in await harness.events_of(o.client_order_id)]
        assert kinds == [epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
