"""Fixtures for router integration tests: a running router wired to real PostgreSQL, Redis, a gRPC
ingest stand-in and an HTTP CLOB / Insiders stand-in, all on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex
from common.config import Secret, StorageSettings
from common.fastredis import FastRedis
from common.grpcserver import GrpcServer
from common.routed import parse_routed
from common.storage import create_pool
from common.streams import LEADER_TRADES, ROUTED_TRADES, DurableLog, create_stream_redis
from services.router.__main__ import RunningRouter, serve
from services.router.adapters.balances import NoBalances
from services.router.adapters.markets import ClobMarketInfo, MarketInfoCache
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RouterStore
from services.router.adapters.store_sql import PLANNER_OPTIONS
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.config import Settings
from services.router.metrics import RouterMetrics
from services.router.outbox import Emitter
from services.router.router import Knobs, Router
from tests.helpers import INTERNAL, with_tuning
from tests.router.fakes import FakeHttp, load, start_ingest
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

MARKET = load("clob_market.json")
BOOK = load("clob_book.json")
YES = MARKET["tokens"][0]["token_id"]
COND = MARKET["condition_id"]
LEADER = "0x" + "f5" * 20

def subscription(sid: str, wallet: str, *, leader: str = LEADER, mode: int = cpb.EXECUTION_MODE_LIVE,
                 sizing: spb.Sizing | None = None, filters: spb.Filters | None = None,
                 risk: spb.Risk | None = None) -> spb.Subscription:
    """An ACTIVE subscription as control puts it in the hot index."""
    return spb.Subscription(
        id=sid, follower_user_id=f"u_{wallet}", follower_wallet_id=wallet, follower_proxy="0x" + "6a" * 20,
        leader_proxy=leader, state=spb.SUBSCRIPTION_STATE_ACTIVE, mode=mode,  # type: ignore[arg-type]
        sizing=sizing or spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25"),
        filters=filters or spb.Filters(copy_sells=True), risk=risk or spb.Risk(),
        perf=spb.Perf(applied_multiplier="1"))


def leader_trade(tid: str, *, side: int = cpb.SIDE_BUY, price: str = "0.4", size: str = "250",
                 wallet: str = LEADER, asset: str = YES, source: int = mpb.FEED_SOURCE_RTDS_TRADES,
                 venue_time_ms: int | None = None) -> mpb.LeaderTradeEvent:
    """A leader trade as ingest emits it (venue time now unless given)."""
    now_ns = time.time_ns()
    return mpb.LeaderTradeEvent(
        id=tid, tx_hash="0x" + "cd" * 32, wallet=wallet, asset_id=asset, condition_id=COND, side=side,  # type: ignore[arg-type]
        price=price, size=size, notional_usd=str(Decimal(price) * Decimal(size)), outcome="Yes",
        market_slug="will-it-rain", event_slug="rain-2026", activity_type=mpb.ACTIVITY_TYPE_TRADE, source=source,  # type: ignore[arg-type]
        venue_time_ms=venue_time_ms if venue_time_ms is not None else now_ns // 1_000_000 - 1500,
        received_time_ns=now_ns, trace=cpb.TraceContext(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"))


@dataclass
class Stack:
    """Handles on the running router and its stand-ins."""

    db_url: str
    redis_url: str
    redis: aioredis.Redis
    stream_redis: aioredis.Redis
    http: FakeHttp
    ingest_log: DurableLog
    routed_log: DurableLog
    ingest: GrpcServer
    running: RunningRouter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def add(self, *subs: spb.Subscription) -> None:
        for sub in subs:
            await hotindex.upsert(self.redis, sub)

    async def publish(self, *events: mpb.LeaderTradeEvent) -> None:
        for ev in events:
            await self.ingest_log.append(ev.SerializeToString())

    async def routed(self) -> list[epb.RoutedTrade]:
        """The log's routed trades, their orders made whole."""
        return [parse_routed(p) for p in await self.routed_payloads()]

    async def routed_payloads(self) -> list[bytes]:
        """The log's entries as appended."""
        return [p for _, p in await self.routed_log.read("0-0", count=100_000, block_ms=0)]

    def settings(self, **kw: Any) -> Settings:
        base: dict[str, Any] = dict(
            storage=StorageSettings(Secret(self.db_url), Secret(self.redis_url)), security=INTERNAL, grpc_port=0,
            ingest_target=f"127.0.0.1:{self.ingest.port}", clob_api_url=self.http.url,
            insiders_api_url=self.http.url, insiders_api_token=Secret("tok"))
        tuned: dict[str, Any] = dict(start="oldest", index_check_interval_s=0.2, outbox_interval_s=0.2,
                                     outbox_min_age_s=0.5, handler_attempts=3)
        return with_tuning(Settings, **{**base, **tuned, **kw})

    async def start_router(self, **kw: Any) -> RunningRouter:
        started: asyncio.Future[RunningRouter] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def until(running: RunningRouter) -> None:
            started.set_result(running)
            await stop.wait()

        task = asyncio.create_task(serve(self.settings(**kw), until))
        self.tasks.append(task)
        self._stop = stop
        done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        self.running = started.result()
        return self.running

    async def stop_router(self) -> None:
        self._stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.running = None


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[RouterStore]:
    """The router's PostgreSQL access on a real, migrated database."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True, options=PLANNER_OPTIONS)
    await pool.wait()
    store = RouterStore(pool)
    yield store
    await store.close()
    await pool.close()


@pytest.fixture
async def stack(db_url: str, redis_url: str) -> AsyncIterator[Stack]:
    http = FakeHttp(balances={"w_bal": "500"})
    http.add_market(MARKET, BOOK)
    await http.start()
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url, block_s=0.2)
    ingest_log = DurableLog(sr, LEADER_TRADES, block_ms=100)
    ingest = await start_ingest(ingest_log)
    s = Stack(db_url, redis_url, r, sr, http, ingest_log, DurableLog(sr, ROUTED_TRADES, block_ms=100), ingest)
    yield s
    if s.tasks:
        await s.stop_router()
    await ingest.stop(0)
    await http.stop()
    await sr.aclose()
    await r.aclose()


def redis_markets_router(cache: Any, state: Any, store: Any, log_: DurableLog, redis: Any, session: Any, *,
                         now_ns: int) -> Router:
    """A Router on real adapters whose market info comes from Redis only (the CLOB address answers nothing),
    no balances, and a clock stopped at ``now_ns``."""
    now_ms = now_ns // 1_000_000
    return Router(followers=cache, redis_state=state, store=store,
                  markets=MarketInfoCache(redis, ClobMarketInfo(session, "http://127.0.0.1:9", timeout_s=0.1),
                                          ttl_ms=3_600_000, clock_ms=lambda: now_ms),
                  balances=NoBalances(), emitter=Emitter(state, store, fetch=log_.entries_from), knobs=Knobs(),
                  metrics=RouterMetrics(), clock_ns=lambda: now_ns)


async def route_on_redis(redis: Any, redis_url: str, db_url: str, evs: list[mpb.LeaderTradeEvent], *, now_ns: int,
                         batched: bool) -> list[epb.RoutedTrade]:
    """Route ``evs`` with :func:`redis_markets_router` on real Redis and PostgreSQL, in one batch or one trade at a
    time; the routed trades logged, in order."""
    sr, fast = create_stream_redis(redis_url), FastRedis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    session = aiohttp.ClientSession()
    store = RouterStore(pool)
    try:
        cache = SubscriptionCache(redis)
        await cache.reload_all()
        log_ = DurableLog(sr, ROUTED_TRADES)
        state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
        router = redis_markets_router(cache, state, store, log_, redis, session, now_ns=now_ns)
        if batched:
            await router.handle_batch(evs)
        else:
            for ev in evs:
                await router.handle(ev)
        return [parse_routed(p) for _, p in await log_.read("0-0", count=10, block_ms=0)]
    finally:
        await session.close()
        await store.close()
        await pool.close()
        fast.close()
        await sr.aclose()


def persisted_orders(db_url: str) -> list[epb.Order]:
    """Every copy order the router persisted: the orders of each ``routed_trades`` row's RoutedTrade, by leader
    trade id (the rows hold the whole RoutedTrade, its parts joined)."""
    with psycopg.connect(db_url) as conn:
        payloads = conn.execute("SELECT payload FROM routed_trades ORDER BY leader_trade_id").fetchall()
    return [o for (p,) in payloads for o in parse_routed(bytes(p)).orders]
