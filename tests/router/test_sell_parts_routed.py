"""The running router sizes a copied SELL on its own subscription's part of the wallet's position when a split is kept
(real PostgreSQL, Redis and gRPC): w_1 follows LEADER (sub_A) and LEADER_B (sub_B); the executor booked sub_A's 100
shares and sub_B's 50 of one token. A leader's exit sells its own subscription's shares, never the other's. A
position with no split kept is sized on the wallet's shares for every subscription, as before splits."""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg.rows import dict_row

from common import hotindex, reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.streams import ROUTED_TRADES
from services.executor.adapters.fill_store import book
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from services.router.adapters.redis_state import SELLS_PREFIX, RedisState
from tests.helpers import eventually
from tests.router.booked import bought
from tests.router.conftest import (
    COND,
    LEADER,
    YES,
    Stack,
    leader_trade,
    route_on_redis,
    subscription,
)
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

D = Decimal
LEADER_B = "0x" + "b7" * 20
LEADER_C = "0x" + "c8" * 20


def _sql(db_url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


async def _start(stack: Stack, *, b_bought: bool = True, subs: tuple[spb.Subscription, ...] = ()) -> None:
    """sub_A bought 100 (LEADER holds 100); sub_B 50 (LEADER_B holds 50) unless ``b_bought`` is False (its copy
    was skipped: the position is sub_A's alone, its split NULL). The router routes ``subs`` (sub_A and sub_B when
    none are given)."""
    await bought(stack.db_url, "co_buy_a", "sub_A", "100", "0.4")
    if b_bought:
        await bought(stack.db_url, "co_buy_b", "sub_B", "50", "0.6")
    for leader, size in ((LEADER, 100), (LEADER_B, 50), (LEADER_C, 80)):
        _sql(stack.db_url, "INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                           " VALUES (%s, %s, %s, 'lt_seen')", leader, YES, size)
    await stack.add(*(subs or (subscription("sub_A", "w_1"), subscription("sub_B", "w_1", leader=LEADER_B))))
    await stack.start_router()


async def _route(stack: Stack, lt: str, leader: str, size: str) -> epb.RoutedTrade:
    """Publish a SELL of ``leader`` and wait for its RoutedTrade (routed alone: the earlier ones are routed)."""
    before = len(await stack.routed())
    await stack.publish(leader_trade(lt, side=cpb.SIDE_SELL, size=size, price="0.5", wallet=leader))

    async def routed() -> epb.RoutedTrade | None:
        got = await stack.routed()
        return got[before] if len(got) > before else None

    return await eventually(routed, timeout_s=15)


def _decided(routed: epb.RoutedTrade) -> list[tuple[str, str]]:
    return [(o.subscription_id, o.size) for o in routed.orders] + [(k.subscription_id, k.reason)
                                                                    for k in routed.skips]


async def test_a_leaders_close_sells_its_subscriptions_part_only(stack: Stack) -> None:
    await _start(stack)
    routed = await _route(stack, "lt_a_close", LEADER, "100")
    assert _decided(routed) == [("sub_A", "100")]  # not the wallet's 150: leader B still holds sub_B's 50
    routed = await _route(stack, "lt_b_half", LEADER_B, "25")
    assert _decided(routed) == [("sub_B", "25")]  # half of sub_B's 50


async def test_another_subscription_of_an_unsplit_position_sells_the_wallets_shares(stack: Stack) -> None:
    """sub_B's copy of leader B's BUY never filled: the position is sub_A's (split NULL). Which subscription's shares
    they are is not kept, so leader B's exit is mirrored on the wallet's shares, as before splits."""
    await _start(stack, b_bought=False)
    assert _sql(stack.db_url, "SELECT subscription_id, subscription_shares FROM positions") == [("sub_A", None)]
    routed = await _route(stack, "lt_b_half", LEADER_B, "25")
    assert _decided(routed) == [("sub_B", "50")]  # half of the wallet's 100
    routed = await _route(stack, "lt_a_close", LEADER, "100")
    assert _decided(routed) == [("sub_A", "50")]  # what sub_B's SELL in flight does not already sell


async def test_a_subscription_recreated_after_its_opener_was_stopped_mirrors_its_leaders_exit(stack: Stack) -> None:
    """sub_A opened the position (split NULL) and was stopped; sub_A2, created again to follow the same leader, is
    the wallet's only subscription now: leader A's exit sells the wallet's shares."""
    await _start(stack, b_bought=False, subs=(subscription("sub_A2", "w_1"),))
    routed = await _route(stack, "lt_a_close", LEADER, "100")
    assert _decided(routed) == [("sub_A2", "100")]


async def test_a_subscription_with_no_part_of_a_split_position_sells_nothing(stack: Stack) -> None:
    """sub_A and sub_B bought the position (its split kept); sub_C of the same wallet bought none of it: leader C's
    exit is not mirrored on shares leaders A and B still hold."""
    await _start(stack, subs=(subscription("sub_A", "w_1"), subscription("sub_B", "w_1", leader=LEADER_B),
                              subscription("sub_C", "w_1", leader=LEADER_C)))
    routed = await _route(stack, "lt_c_close", LEADER_C, "80")
    assert _decided(routed) == [("sub_C", "NOTHING_HELD")]
    assert routed.skips[0].detail == ("subscription holds none of the follower's 150 shares: they belong to other"
                                      " subscriptions of the wallet")


async def test_sells_in_flight_are_held_back_from_their_own_subscriptions_part(stack: Stack) -> None:
    """Routed one after the other, nothing filled yet: sub_B's SELL in flight does not come off sub_A's part; sub_A's
    own does."""
    await _start(stack)
    b_half = await _route(stack, "lt_b_half", LEADER_B, "25")
    assert _decided(b_half) == [("sub_B", "25")]
    coid = b_half.orders[0].client_order_id
    assert await stack.redis.smembers(f"{SELLS_PREFIX}w_1|{YES}") == {f"{coid}|sub_B"}  # indexed with its owner
    await eventually(lambda: _sql(stack.db_url, "SELECT size FROM leader_positions WHERE leader_wallet = %s",
                                  LEADER_B) == [(D(25),)])
    a_half = await _route(stack, "lt_a_half", LEADER, "50")
    assert _decided(a_half) == [("sub_A", "50")]  # half of its 100: sub_B's 25 in flight are not its
    await eventually(lambda: _sql(stack.db_url, "SELECT size FROM leader_positions WHERE leader_wallet = %s",
                                  LEADER) == [(D(50),)])
    a_close = await _route(stack, "lt_a_close", LEADER, "50")
    assert _decided(a_close) == [("sub_A", "50")]  # the 50 of its part its first SELL does not already sell


@pytest.mark.parametrize("batched", [False, True])
async def test_two_leaders_closing_in_one_batch_each_sell_their_own(db_url: str, redis_url: str, r: aioredis.Redis,
                                                                     batched: bool) -> None:
    """Leader B closes, then leader A, in one batch or one by one: the same decisions (sub_B's SELL, carried to the
    next trade of the batch, is not held back from sub_A's part)."""
    now_ns = time.time_ns()
    await bought(db_url, "co_buy_a", "sub_A", "100", "0.4")
    await bought(db_url, "co_buy_b", "sub_B", "50", "0.6")
    for leader, size in ((LEADER, 100), (LEADER_B, 50)):
        _sql(db_url, "INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                     " VALUES (%s, %s, %s, 'lt_seen')", leader, YES, size)
    for sub in (subscription("sub_A", "w_1"), subscription("sub_B", "w_1", leader=LEADER_B)):
        await hotindex.upsert(r, sub)
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    evs = [leader_trade("lt_b_close", side=cpb.SIDE_SELL, size="50", price="0.5", wallet=LEADER_B),
           leader_trade("lt_a_close", side=cpb.SIDE_SELL, size="100", price="0.5", wallet=LEADER)]
    for ev in evs:
        ev.received_time_ns, ev.venue_time_ms = now_ns, now_ns // 1_000_000 - 1500
    routed = await route_on_redis(r, redis_url, db_url, evs, now_ns=now_ns, batched=batched)
    assert [_decided(x) for x in routed] == [[("sub_B", "50")], [("sub_A", "100")]]


async def test_the_sell_index_keeps_each_sells_subscription(r: aioredis.Redis, redis_url: str) -> None:
    fast = FastRedis(redis_url)
    try:
        state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)

        def sell(coid: str, micro: int) -> reservations.Reservation:
            return reservations.Reservation(coid, "w_1", reservations.SHARES, YES, micro, "lt_x")

        assert (await state.emit("lt_1", b"p", [sell("co_a", 50_000_000), sell("co_b", 10_000_000)],
                                 "sub_A\nsub_B")).status == "ok"
        assert (await state.emit("lt_2", b"p", [sell("co_old", 5_000_000)])).status == "ok"  # none given
        index = f"{SELLS_PREFIX}w_1|{YES}"
        assert await r.smembers(index) == {"co_a|sub_A", "co_b|sub_B", "co_old"}
        view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
        assert sorted(view.sells[("w_1", YES)]) == [("co_a", 50_000_000), ("co_b", 10_000_000), ("co_old", 5_000_000)]
        assert view.sell_subscriptions == {"co_a": "sub_A", "co_b": "sub_B"}
        assert await reservations.release(r, "co_a") == 50_000_000
        view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
        assert sorted(view.sells[("w_1", YES)]) == [("co_b", 10_000_000), ("co_old", 5_000_000)]
        assert await r.smembers(index) == {"co_b|sub_B", "co_old"}  # a released SELL leaves the index
    finally:
        fast.close()


async def test_the_sell_index_reads_members_written_before_the_upgrade(r: aioredis.Redis, redis_url: str) -> None:
    """Members the router wrote before subscriptions were kept are a bare client order id: the read lists them
    with their reservation, by no subscription (counted against every part), and keeps them in the index."""
    fast = FastRedis(redis_url)
    try:
        state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
        assert await reservations.reserve(r, [
            reservations.Reservation("co_old", "w_1", reservations.SHARES, YES, 30_000_000, "lt_old"),
            reservations.Reservation("co_new", "w_1", reservations.SHARES, YES, 20_000_000, "lt_new")]) == [1, 1]
        index = f"{SELLS_PREFIX}w_1|{YES}"
        await r.sadd(index, "co_old", "co_new|sub_B")  # as the code before the upgrade and this one write them
        view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
        assert sorted(view.sells[("w_1", YES)]) == [("co_new", 20_000_000), ("co_old", 30_000_000)]
        assert view.sell_subscriptions == {"co_new": "sub_B"}
        assert await r.smembers(index) == {"co_old", "co_new|sub_B"}
        assert await reservations.release(r, "co_old") == 30_000_000  # a released one leaves the index, as before
        view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
        assert view.sells[("w_1", YES)] == (("co_new", 20_000_000),)
        assert await r.smembers(index) == {"co_new|sub_B"}
    finally:
        fast.close()


async def test_a_sell_named_by_two_members_of_the_index_is_listed_once(r: aioredis.Redis, redis_url: str) -> None:
    """A claim named both bare and as ``coid|sub``: one SELL, whose fills come off once."""
    fast = FastRedis(redis_url)
    try:
        state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
        assert await reservations.reserve(r, [
            reservations.Reservation("co_x", "w_1", reservations.SHARES, YES, 30_000_000, "lt_x")]) == [1]
        await r.sadd(f"{SELLS_PREFIX}w_1|{YES}", "co_x", "co_x|sub_B")
        view = await state.read_batch([], [YES], {(COND, YES): ["w_1"]})
        assert view.sells[("w_1", YES)] == (("co_x", 30_000_000),)
        assert view.sell_subscriptions == {"co_x": "sub_B"} and view.sell_order_ids() == ["co_x"]
    finally:
        fast.close()


async def _sold(db_url: str, coid: str, sub: str, size: str, price: str) -> None:
    """What the executor books when the venue fills part of a copy SELL of ``sub`` for w_1."""
    order = epb.Order(client_order_id=coid, subscription_id=sub, follower_wallet_id="w_1",
                      follower_proxy="0x" + "6a" * 20, asset_id=YES, condition_id=COND, outcome="Yes",
                      side=cpb.SIDE_SELL, origin=epb.ORDER_ORIGIN_COPY, size="30", mode=cpb.EXECUTION_MODE_LIVE)
    ticket = Ticket(order=order, venue="INSIDERS", request=None, created_ns=time.time_ns())
    fill = Booking(fill_id=f"fill_{coid}", size=D(size), price=D(price), notional=D(size) * D(price),
                   fee_shares=D(0), first_fill=True, fill_time_ms=int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        await book(conn.cursor(row_factory=dict_row), [(ticket, fill)])


@pytest.mark.parametrize(("member", "expected"), [
    (None, "70"),  # not in the index (expired): its whole reservation of 30 is held back from sub_A's part
    ("co_old", "80"),  # a bare member from before the upgrade: known by id (its 10 filled come off), not by owner
    ("co_old|sub_B", "100"),  # known as sub_B's: it takes sub_B's shares, sub_A's part is whole
])
async def test_a_sell_in_flight_indexed_before_the_upgrade_is_held_back_from_every_part(
        stack: Stack, member: str | None, expected: str) -> None:
    """sub_B's SELL of 30 (co_old), routed by the router before the upgrade, is in flight with 10 of it filled. Leader
    A closes: sub_A's SELL is never sized on shares that SELL may still sell, unless it is known as sub_B's."""
    await _start(stack)
    await _sold(stack.db_url, "co_old", "sub_B", "10", "0.5")
    assert await reservations.reserve(stack.redis, [
        reservations.Reservation("co_old", "w_1", reservations.SHARES, YES, 30_000_000, "lt_old")]) == [1]
    if member is not None:
        await stack.redis.sadd(f"{SELLS_PREFIX}w_1|{YES}", member)
    assert _sql(stack.db_url, "SELECT size FROM positions") == [(D(140),)]  # sub_A 100, sub_B 40
    routed = await _route(stack, "lt_a_close", LEADER, "100")
    assert _decided(routed) == [("sub_A", expected)]
