"""A leader's exit routed after an outage, through the router's real path (real PostgreSQL and Redis).

The follower holds the 62.5 shares its copy bought; the leader's close of its 250 reaches the router 20 minutes
late (the router, or Redis, was down; or RTDS stalled and the data-api poller brought it). It is copied once, sized
on what the follower holds, even when RTDS and the poller both deliver it (one id: ``services.ingest.identity``), and
its order is stamped with the routing time, which the executor's STALE_ORDER check counts from (not the leader's).
"""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex
from common.marketstate import MarketInfo, write_market
from tests.helpers import eventually
from tests.router.conftest import (
    COND,
    LEADER,
    YES,
    Stack,
    leader_trade,
    persisted_orders,
    route_on_redis,
    subscription,
)
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal
LATE_MS = 20 * 60_000


async def _setup(db_url: str, r: aioredis.Redis, now_ns: int) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_1', %s, %s, '0xa', 62.5, 0.4, 25)", (YES, COND))
        conn.execute("INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                     " VALUES (%s, %s, 250, 'lt_buy')", (LEADER, YES))
    await hotindex.upsert(r, subscription("sub_A", "w_1"))
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")


def _close(now_ns: int, source: int) -> mpb.LeaderTradeEvent:
    ev = leader_trade("lt_close", side=cpb.SIDE_SELL, size="250", price="0.55", source=source)
    ev.received_time_ns, ev.venue_time_ms = now_ns, now_ns // 1_000_000 - LATE_MS
    return ev


@pytest.mark.parametrize("batched", [False, True])
async def test_a_late_exit_is_copied_once_on_what_the_follower_holds(
        db_url: str, redis_url: str, r: aioredis.Redis, batched: bool) -> None:
    now_ns = time.time_ns()
    await _setup(db_url, r, now_ns)
    both = [_close(now_ns, mpb.FEED_SOURCE_RTDS_TRADES), _close(now_ns, mpb.FEED_SOURCE_DATA_API)]
    routed = await route_on_redis(r, redis_url, db_url, both, now_ns=now_ns, batched=batched)
    [one] = routed  # the poller's delivery of the same trade is a duplicate
    assert [s.reason for s in one.skips] == []
    [o] = one.orders
    assert (o.subscription_id, o.side, D(o.size)) == ("sub_A", cpb.SIDE_SELL, D("62.5"))
    # the executor counts an order's age from when it was routed (``routed_time_ns``), not from the leader's trade
    assert o.routed_time_ns == now_ns and o.leader_venue_time_ms == now_ns // 1_000_000 - LATE_MS
    assert [(p.client_order_id, D(p.size)) for p in persisted_orders(db_url)] == [(o.client_order_id, D("62.5"))]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT size FROM leader_positions").fetchall() == [(D(0),)]


async def test_an_exit_past_the_exit_age_is_still_skipped(db_url: str, redis_url: str, r: aioredis.Redis) -> None:
    now_ns = time.time_ns()
    await _setup(db_url, r, now_ns)
    ev = _close(now_ns, mpb.FEED_SOURCE_DATA_API)
    ev.venue_time_ms = now_ns // 1_000_000 - 7 * 3_600_000
    [one] = await route_on_redis(r, redis_url, db_url, [ev], now_ns=now_ns, batched=False)
    assert (list(one.orders), [s.reason for s in one.skips]) == ([], ["TRADE_TOO_OLD"])


async def test_the_service_takes_the_operators_exit_age(stack: Stack) -> None:
    """TT_ROUTER_MAX_EXIT_AGE_S reaches the routing: set to 10 minutes, a SELL 20 minutes old is TRADE_TOO_OLD
    (under the 6 h default it would be sized, here NOTHING_HELD: the follower holds none)."""
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router(max_exit_age_s=600.0)
    late = leader_trade("lt_late", side=cpb.SIDE_SELL, size="100", price="0.5",
                        venue_time_ms=time.time_ns() // 1_000_000 - LATE_MS)
    await stack.publish(late)

    async def routed() -> list[str]:
        got = await stack.routed()
        assert got
        return [s.reason for s in got[0].skips]

    reasons: list[str] = await eventually(routed, timeout_s=15)
    assert reasons == ["TRADE_TOO_OLD"]
