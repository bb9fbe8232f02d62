"""The router end to end on real PostgreSQL and Redis, with a real gRPC ingest stand-in and a real
HTTP stand-in for the CLOB market info and the Insiders balance endpoint."""

from __future__ import annotations

import time
from decimal import Decimal

import grpc
import psycopg
import pytest

from common import reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, read_book, write_market
from common.storage import create_pool
from common.streams import ROUTED_TRADES
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RoutedRow, RouterStore
from services.router.outbound import order_template, reservations_of, split_routed
from tests.helpers import eventually, internal_channel, rpc_code
from tests.router.conftest import COND, LEADER, YES, Stack, leader_trade, persisted_orders, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal


def _sql(db_url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql, args)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


async def _routed_count(stack: Stack, n: int) -> list[epb.RoutedTrade]:
    async def check() -> list[epb.RoutedTrade] | None:
        got = await stack.routed()
        return got if len(got) >= n else None

    return await eventually(check, timeout_s=15)


async def test_one_order_per_matching_follower_with_the_right_amount(stack: Stack) -> None:
    _sql(stack.db_url, "INSERT INTO funding (follower_wallet_id, balance_usd, as_of, updated_at)"
                       " VALUES ('w_pct', 1000, now(), now())")
    await stack.add(
        subscription("sub_fixed", "w_fixed"),
        subscription("sub_prop", "w_prop", mode=cpb.EXECUTION_MODE_PAPER,
                     sizing=spb.Sizing(mode=spb.SIZING_MODE_PROPORTIONAL, ratio="0.05", min_order_usd="1")),
        subscription("sub_pct", "w_pct", sizing=spb.Sizing(mode=spb.SIZING_MODE_PERCENT_OF_BALANCE,
                                                           percent_of_balance="2")),
        subscription("sub_bal", "w_bal", sizing=spb.Sizing(mode=spb.SIZING_MODE_PERCENT_OF_BALANCE,
                                                           percent_of_balance="2")),
        subscription("sub_cheap", "w_cheap", filters=spb.Filters(max_price="0.3")),
        subscription("sub_other", "w_other", leader="0x" + "11" * 20),
    )
    await stack.start_router()
    ev = leader_trade("lt_a")  # BUY 250 @ 0.40 = $100
    await stack.publish(ev)
    [routed] = await _routed_count(stack, 1)
    amounts = {o.subscription_id: o.amount_usd for o in routed.orders}
    assert amounts == {"sub_fixed": "25", "sub_prop": "5", "sub_pct": "20", "sub_bal": "10"}
    assert [(s.subscription_id, s.reason) for s in routed.skips] == [("sub_cheap", "PRICE_ABOVE_MAX")]
    by_sub = {o.subscription_id: o for o in routed.orders}
    o = by_sub["sub_prop"]
    assert o.origin == epb.ORDER_ORIGIN_COPY and o.order_type == epb.ORDER_TYPE_FAK and o.side == cpb.SIDE_BUY
    assert (o.asset_id, o.condition_id, o.reference_price, o.tick_size, o.min_order_size) == (
        YES, COND, "0.4", "0.01", "5")
    assert o.mode == cpb.EXECUTION_MODE_PAPER and by_sub["sub_fixed"].mode == cpb.EXECUTION_MODE_LIVE
    assert (o.leader_trade_id, o.received_time_ns, o.max_slippage_bps) == ("lt_a", ev.received_time_ns, 200)
    assert o.routed_time_ns >= ev.received_time_ns
    # one trace per leader trade: the order carries the leader trade's trace id (router span as parent)
    assert o.trace.traceparent.split("-")[1] == ev.trace.traceparent.split("-")[1]
    assert o.client_order_id == reservations.order_key(o.client_order_id)[len("tt:order:"):]
    assert stack.http.auth == ["Bearer tok"]  # the balance endpoint was asked for w_bal only
    # persisted: orders, the skip and its count (written right after the emit: wait for the handler to finish)
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 1)
    rows = sorted((o.subscription_id, D(o.amount_usd)) for o in persisted_orders(stack.db_url))
    assert rows == [("sub_bal", D(10)), ("sub_fixed", D(25)), ("sub_pct", D(20)), ("sub_prop", D(5))]
    assert _sql(stack.db_url, "SELECT subscription_id, reason FROM copy_skips") == [("sub_cheap", "PRICE_ABOVE_MAX")]
    assert _sql(stack.db_url, "SELECT skipped FROM subscription_stats WHERE subscription_id = 'sub_cheap'") == [(1,)]
    # reserved: in-flight BUYs count against exposure until the executor releases them
    got = await reservations.read(stack.redis, ["w_fixed"], COND, YES)
    assert (got["w_fixed"].market_usd_micro, got["w_fixed"].markets) == (25_000_000, {COND})
    assert await reservations.release(stack.redis, by_sub["sub_fixed"].client_order_id) == 25_000_000
    assert stack.running is not None and stack.running.metrics.skip_reasons["PRICE_ABOVE_MAX"] == 1


async def test_same_trade_from_both_feeds_gives_one_routed_trade(stack: Stack) -> None:
    await stack.add(subscription("sub_1", "w_1"), subscription("sub_2", "w_2"))
    await stack.start_router()
    ev = leader_trade("lt_dup")
    await stack.publish(ev, leader_trade("lt_dup", source=mpb.FEED_SOURCE_DATA_API), leader_trade("lt_next"))
    await _routed_count(stack, 2)
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 3)
    routed = await stack.routed()
    assert [r.trade.id for r in routed] == ["lt_dup", "lt_next"]
    ids = [o.client_order_id for r in routed for o in r.orders]
    assert len(ids) == 4 == len(set(ids))
    assert len(persisted_orders(stack.db_url)) == 4
    assert stack.running is not None and stack.running.metrics.counts["duplicate_redis"] == 1


async def test_sell_is_sized_from_the_follower_position(stack: Stack) -> None:
    _sql(stack.db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                       " cost_usd) VALUES ('w_1', %s, %s, '0xa', 100, 0.4, 40)", YES, COND)
    await stack.add(subscription("sub_1", "w_1"), subscription("sub_2", "w_2"),
                    subscription("sub_3", "w_3", filters=spb.Filters(copy_sells=False)))
    await stack.start_router()
    await stack.publish(leader_trade("lt_buy", size="300"))
    [buy] = await _routed_count(stack, 1)
    assert len(buy.orders) == 3
    for o in buy.orders:  # the executor got the venue's answers: nothing bought (nothing booked), released
        await reservations.release(stack.redis, o.client_order_id)
    await stack.publish(leader_trade("lt_sell", side=cpb.SIDE_SELL, size="100", price="0.5"),
                        leader_trade("lt_sell2", side=cpb.SIDE_SELL, size="200", price="0.5"))
    _, sell, sell2 = await _routed_count(stack, 3)
    [o] = sell.orders  # the leader sold 1/3 of its 300 shares: 1/3 of the follower's 100
    assert (o.subscription_id, o.side, o.size, o.amount_usd) == ("sub_1", cpb.SIDE_SELL, "33.33", "")
    assert sorted((s.subscription_id, s.reason) for s in sell.skips) == [
        ("sub_2", "NOTHING_HELD"), ("sub_3", "COPY_SELLS_DISABLED")]
    # the leader closed: the follower sells what is left, minus the shares already being sold
    [o2] = sell2.orders
    assert o2.size == "66.67"
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 3)  # rows follow the emit
    assert sorted((p.client_order_id, D(p.size), p.sell_fraction) for p in persisted_orders(stack.db_url)
                  if p.side == cpb.SIDE_SELL) == sorted([(o.client_order_id, D("33.33"), ""),
                                                         (o2.client_order_id, D("66.67"), "")])
    assert _sql(stack.db_url, "SELECT size FROM leader_positions WHERE leader_wallet = %s", LEADER) == [(D(0),)]


async def test_skips_with_a_reason_for_every_follower_when_the_trade_cannot_be_copied(stack: Stack) -> None:
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router()
    stale = leader_trade("lt_old", venue_time_ms=1)  # a replay of old history
    bad = leader_trade("lt_bad", price="1.5")
    unknown = leader_trade("lt_unknown", asset="999")  # the CLOB has no such market
    redeem = leader_trade("lt_redeem")
    redeem.activity_type = mpb.ACTIVITY_TYPE_REDEEM
    await stack.publish(stale, bad, unknown, redeem)
    routed = await _routed_count(stack, 3)
    assert [(r.trade.id, [s.reason for s in r.skips]) for r in routed] == [
        ("lt_old", ["TRADE_TOO_OLD"]), ("lt_bad", ["INVALID_TRADE"]), ("lt_unknown", ["MARKET_INFO_UNAVAILABLE"])]
    await eventually(lambda: stack.running and stack.running.metrics.counts["ignored"] == 1)
    # the stats row is written with the batch, after the routed trades are emitted
    await eventually(lambda: _sql(stack.db_url, "SELECT skipped FROM subscription_stats") == [(3,)])


async def test_the_routed_stream_needs_the_internal_token(stack: Stack) -> None:
    await stack.add(subscription("sub_1", "w_1"))
    running = await stack.start_router()  # it reads the ingest stand-in, which refuses calls without the token
    await stack.publish(leader_trade("lt_1"))
    await _routed_count(stack, 1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc.port}") as channel:
        stub = egrpc.RouterServiceStub(channel)
        for metadata in ((), (("authorization", f"Bearer {'c0' * 32}"),)):
            call = stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor="0"), metadata=metadata)
            assert await rpc_code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_routed_trades_are_served_over_grpc(stack: Stack) -> None:
    await stack.add(subscription("sub_1", "w_1"))
    running = await stack.start_router()
    await stack.publish(leader_trade("lt_1"), leader_trade("lt_2"))
    await _routed_count(stack, 2)
    async with internal_channel(running.grpc.port) as channel:
        stub = egrpc.RouterServiceStub(channel)
        call = stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor="0", consumer="test"))
        first = await call.read()
        second = await call.read()
        assert [first.routed.trade.id, second.routed.trade.id] == ["lt_1", "lt_2"]
        call.cancel()
        rest = stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor=first.cursor))
        assert (await rest.read()).routed.trade.id == "lt_2"
        rest.cancel()
        bad = stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor="yesterday"))
        try:
            await bad.read()
            raise AssertionError("expected INVALID_ARGUMENT")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_sell_while_the_copy_buy_is_in_flight_goes_out_as_the_leaders_fraction(stack: Stack) -> None:
    """The leader bought and sold before the copy BUYs were answered: each follower's SELL carries the fraction
    the leader sold (for the executor to size once the BUY is answered) instead of NOTHING_HELD, which left
    the follower holding what the leader had sold; it reserves no shares and is recorded with its fraction."""
    await stack.add(subscription("sub_1", "w_1"), subscription("sub_2", "w_2"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_buy", size="300"),
                        leader_trade("lt_sell", side=cpb.SIDE_SELL, size="100", price="0.5"),
                        leader_trade("lt_sell2", side=cpb.SIDE_SELL, size="200", price="0.5"))
    _, sell, sell2 = await _routed_count(stack, 3)
    assert sorted((o.subscription_id, o.size, o.sell_fraction) for o in sell.orders) == [
        ("sub_1", "", "0.3333333333333333333333333333"), ("sub_2", "", "0.3333333333333333333333333333")]
    assert sorted((o.subscription_id, o.size, o.sell_fraction) for o in sell2.orders) == [
        ("sub_1", "", "1"), ("sub_2", "", "1")]
    assert not sell.skips and not sell2.skips
    held = await reservations.read(stack.redis, ["w_1"], COND, YES)
    assert held["w_1"].asset_shares_micro == 0 and held["w_1"].market_usd_micro > 0  # only the BUY's USD
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 3)
    rows = sorted((D(o.sell_fraction), o.subscription_id, o.size) for o in persisted_orders(stack.db_url)
                  if o.side == cpb.SIDE_SELL)
    assert [(sub, size, f.quantize(D("0.0001"))) for f, sub, size in rows] == [
        ("sub_1", "", D("0.3333")), ("sub_2", "", D("0.3333")), ("sub_1", "", D(1)), ("sub_2", "", D(1))]


async def test_a_decision_persisted_but_never_appended_is_emitted_once(stack: Stack) -> None:
    """The crash window between the PostgreSQL write and the Redis append: the outbox heals it, and a
    redelivery of the trade re-emits the stored decision instead of deciding again."""
    await stack.add(subscription("sub_1", "w_1"))
    pool = await create_pool(stack.db_url, min_size=1, max_size=1, autocommit=True)
    store = RouterStore(pool)
    for lt in ("lt_crashed", "lt_crashed2"):
        ev = leader_trade(lt)
        decided = epb.RoutedTrade(trade=ev)
        o = decided.orders.add()
        o.MergeFrom(order_template(ev, None, 1, ev.trace))
        o.client_order_id, o.subscription_id, o.follower_wallet_id, o.amount_usd = f"co_{lt}", "sub_1", "w_1", "25"
        await store.persist(RoutedRow(lt, LEADER, YES, COND, "BUY", decided.SerializeToString(), D(250), orders=1))
    await pool.close()
    await stack.publish(leader_trade("lt_crashed2"))  # the consumer had not saved its cursor: redelivered
    await stack.start_router()  # the start-up sweep finds both
    await _routed_count(stack, 2)
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 1)
    await stack.publish(leader_trade("lt_crashed"))
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 2)
    routed = await stack.routed()
    assert sorted(r.trade.id for r in routed) == ["lt_crashed", "lt_crashed2"]
    assert sorted(o.client_order_id for r in routed for o in r.orders) == ["co_lt_crashed", "co_lt_crashed2"]
    await eventually(lambda: _sql(stack.db_url, "SELECT count(*) FROM routed_trades"
                                                " WHERE appended_cursor IS NULL") == [(0,)])
    assert len(persisted_orders(stack.db_url)) == 2


async def test_first_copy_in_an_unwatched_asset_has_its_book_stored_before_it_is_routed(stack: Stack) -> None:
    # market info cached (e.g. by an earlier trade of the sibling token), but ingest has no book yet
    await write_market(stack.redis, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=int(time.time() * 1000)))
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_book"))
    [routed] = await _routed_count(stack, 1)
    assert routed.orders
    book = await read_book(stack.redis, YES)  # there by the time the executor reads the routed trade
    assert book is not None and (book.best_bid, book.best_ask) == (D("0.39"), D("0.41"))
    assert stack.http.requests == [f"/book?token_id={YES}"]  # the book alone: market info was cached


async def test_a_trade_appended_but_not_persisted_gets_its_rows_from_the_log(stack: Stack) -> None:
    """The crash window between the Redis append and the PostgreSQL write: the redelivered trade finds the
    marker, writes the rows of what was appended (with its cursor) and appends nothing again."""
    await stack.add(subscription("sub_1", "w_1"))
    ev = leader_trade("lt_appended")
    decided = epb.RoutedTrade(trade=ev)
    o = decided.orders.add()
    o.MergeFrom(order_template(ev, None, 1, ev.trace))
    o.client_order_id, o.subscription_id, o.follower_wallet_id, o.amount_usd = "co_app", "sub_1", "w_1", "25"
    o.mode = cpb.EXECUTION_MODE_LIVE
    decided.skips.add(subscription_id="sub_x", follower_wallet_id="w_x", reason="PRICE_ABOVE_MAX", detail="d")
    fast = FastRedis(stack.redis_url)
    state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=60, stream_maxlen=1000)
    emitted = await state.emit("lt_appended", decided.SerializeToString(), reservations_of(decided))
    fast.close()
    assert emitted.status == "ok"
    await stack.publish(ev)  # redelivered: the consumer had not saved its cursor
    await stack.start_router()
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 1)
    assert [r.trade.id for r in await stack.routed()] == ["lt_appended"]  # appended once
    assert _sql(stack.db_url, "SELECT appended_cursor, orders, skips FROM routed_trades") == [(emitted.cursor, 1, 1)]
    assert [(o.client_order_id, D(o.amount_usd), o.mode) for o in persisted_orders(stack.db_url)] == [
        ("co_app", D(25), cpb.EXECUTION_MODE_LIVE)]
    assert _sql(stack.db_url, "SELECT subscription_id, reason FROM copy_skips") == [("sub_x", "PRICE_ABOVE_MAX")]
    assert _sql(stack.db_url, "SELECT size FROM leader_positions") == [(D(250),)]


async def test_a_split_trade_appended_but_not_persisted_gets_its_rows_from_all_its_parts(stack: Stack) -> None:
    """The same crash window for a decision appended in parts: the rows come from the parts joined."""
    subs = [subscription(f"sub_{i}", f"w_{i}") for i in range(12)]
    await stack.add(*subs)
    ev = leader_trade("lt_parts")
    decided = epb.RoutedTrade(trade=ev)
    for i in range(12):
        o = decided.orders.add()
        o.MergeFrom(order_template(ev, None, 1, ev.trace))
        o.client_order_id, o.subscription_id, o.follower_wallet_id = f"co_p{i}", f"sub_{i}", f"w_{i}"
        o.amount_usd = "25"
        o.mode = cpb.EXECUTION_MODE_LIVE
    payload = decided.SerializeToString()
    parts = split_routed(decided, payload, max_bytes=len(payload) // 4)
    assert len(parts) > 2
    fast = FastRedis(stack.redis_url)
    state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=60, stream_maxlen=1000)
    emitted = await state.emit("lt_parts", parts, reservations_of(decided))
    fast.close()
    assert emitted.status == "ok"
    logged = await stack.routed()
    assert [(r.part, r.parts) for r in logged] == [(i, len(parts)) for i in range(len(parts))]
    await stack.publish(ev)  # redelivered
    await stack.start_router()
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 1)
    assert len(await stack.routed()) == len(parts)  # nothing appended again
    assert _sql(stack.db_url, "SELECT appended_cursor, orders FROM routed_trades") == [(emitted.cursor, 12)]
    assert len(persisted_orders(stack.db_url)) == 12


async def test_rows_carry_the_cursor_of_the_append(stack: Stack) -> None:
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_c"))
    await eventually(lambda: stack.running and stack.running.consumer.stats.handled == 1)
    [(cursor,)] = _sql(stack.db_url, "SELECT appended_cursor FROM routed_trades")
    assert cursor and await stack.routed_log.entry(str(cursor)) is not None


async def test_a_backlog_is_routed_in_batches_that_carry_exposure(stack: Stack) -> None:
    """Trades waiting when the router starts reach it together: fewer reads than trades, and each trade
    still sees what the earlier ones reserved (the market cap binds mid-batch), cursor saved at the end."""
    await stack.add(subscription("sub_cap", "w_cap", risk=spb.Risk(max_market_exposure_usd="60")))
    await stack.publish(*[leader_trade(f"lt_{i:02d}") for i in range(30)])
    running = await stack.start_router()
    await eventually(lambda: running.consumer.stats.handled == 30, timeout_s=15)
    routed = await stack.routed()
    assert [r.trade.id for r in routed] == [f"lt_{i:02d}" for i in range(30)]
    assert [o.amount_usd for r in routed for o in r.orders] == ["25", "25", "10"]
    assert [k.reason for r in routed[3:] for k in r.skips] == ["MARKET_EXPOSURE_LIMIT"] * 27
    assert running.metrics.counts["trades"] == 30 and running.metrics.counts["batches"] < 30
    cursor = (await stack.ingest_log.read("0-0", count=100, block_ms=0))[-1][0]

    async def saved() -> bool:
        return await stack.redis.get("tt:cursor:router") == cursor

    await eventually(saved, timeout_s=5)
