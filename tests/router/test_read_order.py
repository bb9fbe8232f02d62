"""The router reads the reservations (Redis) before it takes its PostgreSQL snapshot: the executor commits a
fill (position cost up) and only then releases the order's reservation, so in between both count (safe),
and a fill committed and released between the router's two reads must still be counted once. Here the
executor's commit and release are placed exactly between them, whichever order the router reads in."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex, reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.routed import parse_routed
from common.storage import create_pool
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RouterStore
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.router import Router
from tests.router.conftest import COND, YES, leader_trade, redis_markets_router, subscription
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

D = Decimal
NOW_NS = time.time_ns()
WALLET = "w_cap"


class Window:
    def __init__(self) -> None:
        self.executor_done = asyncio.Event()
        self.db_url = ""
        self.redis: aioredis.Redis | None = None

    async def executor_fills_and_releases(self) -> None:
        """The executor: the $25 BUY in flight fills (position booked, committed), then its release."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size,"
                         " avg_price, cost_usd) VALUES (%s, %s, %s, '0xa', 62.5, 0.4, 25)", (WALLET, YES, COND))
        assert self.redis is not None
        assert await reservations.release(self.redis, "co_prev") == 25_000_000
        self.executor_done.set()


class SnapshotThenExecutor(RouterStore):
    window: Window

    async def load_batch(self, **kw: Any) -> Any:
        snapshot = await super().load_batch(**kw)  # PostgreSQL snapshot taken (before the fill commits)
        if not self.window.executor_done.is_set():
            await self.window.executor_fills_and_releases()
        return snapshot


class LateRedisRead(RedisState):
    window: Window

    async def read_batch(self, *a: Any, **kw: Any) -> Any:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.window.executor_done.wait(), 1.0)
        return await super().read_batch(*a, **kw)


@pytest.fixture
async def env(db_url: str, redis_url: str) -> AsyncIterator[tuple[Router, DurableLog, aioredis.Redis]]:
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url)
    fast = FastRedis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    session = aiohttp.ClientSession()
    await hotindex.upsert(r, subscription("sub_cap", WALLET, sizing=spb.Sizing(
        mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25"), risk=spb.Risk(max_market_exposure_usd="30")))
    now_ms = NOW_NS // 1_000_000
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ms))
    await r.set(f"tt:book:{YES}", "{}")
    cache = SubscriptionCache(r)
    await cache.reload_all()
    window = Window()
    window.db_url, window.redis = db_url, r
    state = LateRedisRead(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
    state.window = window
    store = SnapshotThenExecutor(pool)
    store.window = window
    log_ = DurableLog(sr, ROUTED_TRADES)
    router = redis_markets_router(cache, state, store, log_, r, session, now_ns=NOW_NS)
    yield router, log_, r
    await session.close()
    await store.close()
    await pool.close()
    fast.close()
    await sr.aclose()
    await r.aclose()


async def test_a_fill_between_the_two_reads_is_still_counted(env: tuple[Router, DurableLog, aioredis.Redis]) -> None:
    router, log_, r = env
    # an earlier $25 copy BUY of this wallet in this market is in flight: reserved by the router's emit
    await reservations.reserve(r, [reservations.Reservation("co_prev", WALLET, reservations.USD, COND,
                                                            25_000_000, "lt_prev")])
    ev = leader_trade("lt_new")
    ev.received_time_ns = NOW_NS
    ev.venue_time_ms = NOW_NS // 1_000_000 - 1500
    await router.handle(ev)
    [(_, payload)] = await log_.read("0-0", count=10, block_ms=0)
    routed = parse_routed(payload)
    amounts = [D(o.amount_usd) for o in routed.orders if o.follower_wallet_id == WALLET]
    # maxMarketExposureUsd 30, $25 already spent in this market (in flight, then filled): at most $5 more
    assert amounts and amounts[0] <= D(5), (
        f"copied ${amounts[0]} into a market already holding $25 under a $30 cap "
        f"(market exposure ${25 + amounts[0]})")
