"""A leader's exit made before the subscription became active, reaching the router late (a backlog after an
outage), through the router's real path (real PostgreSQL and Redis).

The leader buys 100 shares at T0 (the router sees it, or not: the leader was followed by nobody); the follower
subscribes at T1; the leader buys 50 more at T2, copied (the follower holds the copy's 62.5 shares, or the copy is
still in flight); then the leader's SELL of its first 100, made between T0 and T1, arrives. It sold shares the
follower's copies never mirrored: the leader still holds the 50 the copy mirrors. It is skipped TRADE_BEFORE_ACTIVE
(the leader's recorded position still falls by it), where it sold 2/3 of the copy (or all of it, when the T0 BUY was
not seen: 100 sold of the 50 recorded read as a close). A position the follower held from before the subscription
last became ACTIVE (bought before a pause) still follows such an exit.
"""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex, reservations
from common.marketstate import MarketInfo, write_market
from tests.router.conftest import COND, LEADER, YES, leader_trade, route_on_redis, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal
S = 1_000_000_000  # ns


def _at(tid: str, side: int, size: str, venue_ns: int) -> mpb.LeaderTradeEvent:
    ev = leader_trade(tid, side=side, size=size)
    ev.venue_time_ms, ev.received_time_ns = venue_ns // 1_000_000, venue_ns + S
    return ev


def _leader_size(db_url: str) -> list[tuple[Decimal]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT size FROM leader_positions").fetchall()


def _book(db_url: str, opened_ns: int) -> None:
    """The executor's booking of the copy's fill: 62.5 shares for $25, a position its copy opened."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, origin, subscription_id, opened_at)"
                     " VALUES ('w_1', %s, %s, '0xa', 62.5, 0.4, 25, 'COPY', 'sub_A', to_timestamp(%s))",
                     (YES, COND, opened_ns / S))


async def _follow_then_exit(db_url: str, redis_url: str, r: aioredis.Redis, *, seen: bool,
                            answered: bool) -> epb.RoutedTrade:
    now = time.time_ns()
    t0, t1, t2, ts = now - 3000 * S, now - 2000 * S, now - 1000 * S, now - 2500 * S
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=t0 // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    if seen:  # the router saw the leader's BUY before anyone followed it: no copy, its recorded position counts it
        await route_on_redis(r, redis_url, db_url, [_at("lt_pre", cpb.SIDE_BUY, "100", t0)],
                             now_ns=t0 + S, batched=False)
        assert _leader_size(db_url) == [(D(100),)]
    sub = subscription("sub_A", "w_1")
    sub.active_time.FromNanoseconds(t1)
    await hotindex.upsert(r, sub)
    routed = await route_on_redis(r, redis_url, db_url, [_at("lt_buy", cpb.SIDE_BUY, "50", t2)],
                                  now_ns=t2 + S, batched=False)
    [copy] = routed[-1].orders
    assert (copy.side, D(copy.amount_usd)) == (cpb.SIDE_BUY, D(25))
    if answered:
        _book(db_url, t2 + 2 * S)
        await reservations.release(r, copy.client_order_id)
    routed = await route_on_redis(r, redis_url, db_url, [_at("lt_exit", cpb.SIDE_SELL, "100", ts)],
                                  now_ns=now, batched=False)
    return routed[-1]


@pytest.mark.parametrize("seen", [True, False])
@pytest.mark.parametrize("answered", [True, False])
async def test_an_exit_made_before_the_follow_does_not_sell_the_copy_of_a_newer_buy(
        db_url: str, redis_url: str, r: aioredis.Redis, seen: bool, answered: bool) -> None:
    exit_ = await _follow_then_exit(db_url, redis_url, r, seen=seen, answered=answered)
    assert exit_.trade.id == "lt_exit"
    assert [(o.subscription_id, o.size, o.sell_fraction) for o in exit_.orders] == []
    assert [(s.subscription_id, s.reason) for s in exit_.skips] == [("sub_A", "TRADE_BEFORE_ACTIVE")]
    # the leader holds the 50 shares the copy mirrors: its next exit of them sells the copy (not seen, the T0 BUY
    # left no record: the 100 sold floor the 50 recorded at 0, and the leader's next SELL reads as a close)
    assert _leader_size(db_url) == [(D(50) if seen else D(0),)]


async def test_an_exit_before_a_resume_still_sells_a_position_held_from_before_the_pause(
        db_url: str, redis_url: str, r: aioredis.Redis) -> None:
    """The copy was bought before the subscription was paused; the leader's close, made before the resume, arrives
    after it: it is mirrored, as before."""
    now = time.time_ns()
    resumed, ts = now - 1000 * S, now - 1500 * S
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    _book(db_url, now - 3000 * S)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                     " VALUES (%s, %s, 100, 'lt_buy')", (LEADER, YES))
    sub = subscription("sub_A", "w_1")
    sub.active_time.FromNanoseconds(resumed)
    await hotindex.upsert(r, sub)
    [exit_] = await route_on_redis(r, redis_url, db_url, [_at("lt_exit", cpb.SIDE_SELL, "100", ts)],
                                   now_ns=now, batched=False)
    assert [s.reason for s in exit_.skips] == []
    [o] = exit_.orders
    assert (o.subscription_id, o.side, D(o.size)) == ("sub_A", cpb.SIDE_SELL, D("62.5"))


async def test_in_one_batch_with_the_copied_buy(db_url: str, redis_url: str, r: aioredis.Redis) -> None:
    """The late exit routed in the batch that copies the newer BUY: the copy is in flight, nothing is held."""
    now = time.time_ns()
    t1, t2, ts = now - 2000 * S, now - 10 * S, now - 2500 * S
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    sub = subscription("sub_A", "w_1")
    sub.active_time.FromNanoseconds(t1)
    await hotindex.upsert(r, sub)
    evs = [_at("lt_buy", cpb.SIDE_BUY, "50", t2), _at("lt_exit", cpb.SIDE_SELL, "100", ts)]
    buy, exit_ = await route_on_redis(r, redis_url, db_url, evs, now_ns=now, batched=True)
    assert [(o.side, D(o.amount_usd)) for o in buy.orders] == [(cpb.SIDE_BUY, D(25))]
    assert [(o.subscription_id, o.size, o.sell_fraction) for o in exit_.orders] == []
    assert [(s.subscription_id, s.reason) for s in exit_.skips] == [("sub_A", "TRADE_BEFORE_ACTIVE")]
