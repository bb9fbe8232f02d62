"""Fixtures for executor integration tests: the Insiders fake, a router stand-in, the executor in-process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from common.grpcserver import GrpcServer, start_server
from common.livefeed import LiveFeed
from common.marketstate import BookSnapshot, write_book
from common.storage import create_pool
from common.streams import (
    MARKET_RESOLUTIONS,
    ORDER_EVENTS,
    REDEMPTION_EVENTS,
    ROUTED_TRADES,
    DurableLog,
    create_stream_redis,
    serve_log,
)
from services.executor.adapters.order_store import Change, OrderStore
from services.executor.app import Running, start
from services.executor.config import Settings
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.fill_math import Booking
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.ticket import Ticket
from services.executor.journal import Journal
from services.executor.order_events import build_event
from services.executor.releases import Release
from sim.insiders import InsidersFake
from sim.venue import StaticBooks
from tests.helpers import INTERNAL, INTERNAL_ENV, eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

TOKEN = "test-insiders-token"
ASSET = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
CONDITION = "0x" + "c" * 64

FAST_ENV = {
    **INTERNAL_ENV,
    "TT_EXECUTOR_GRPC_PORT": "0",
    "TT_TUNE_EXECUTOR_POST_TIMEOUT_S": "0.5",
    "TT_TUNE_EXECUTOR_QUERY_TIMEOUT_S": "0.5",
    "TT_TUNE_EXECUTOR_RETRY_BASE_S": "0.01",
    "TT_TUNE_EXECUTOR_RETRY_CAP_S": "0.05",
    "TT_TUNE_EXECUTOR_POLL_INITIAL_S": "0.02",
    "TT_TUNE_EXECUTOR_POLL_MAX_S": "0.1",
    "TT_TUNE_EXECUTOR_SETTLE_INTERVAL_S": "0.05",
    "TT_TUNE_EXECUTOR_BREAKER_WAIT_S": "0.2",
    "TT_TUNE_EXECUTOR_SUBMIT_WAIT_S": "5",
}


class RouterStandIn(egrpc.RouterServiceServicer):
    """Serves ``tt:stream:routed_trades`` like the router does."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamRoutedTrades(self, request, context):  # type: ignore[no-untyped-def]
        def build(cursor: str, payload: bytes) -> epb.StreamRoutedTradesResponse:
            return epb.StreamRoutedTradesResponse(cursor=cursor, routed=epb.RoutedTrade.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


class IngestStandIn(mgrpc.IngestServiceServicer):
    """Serves ``tt:stream:market_resolutions`` like ingest does."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamMarketResolutions(self, request, context):  # type: ignore[no-untyped-def]
        def build(cursor: str, payload: bytes) -> mpb.StreamMarketResolutionsResponse:
            return mpb.StreamMarketResolutionsResponse(cursor=cursor,
                                                       resolution=mpb.MarketResolution.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


class Harness:
    """Everything an integration test drives."""

    def __init__(self, redis_url: str, db_url: str) -> None:
        self.redis_url = redis_url
        self.db_url = db_url
        self.books = StaticBooks()
        self.fake = InsidersFake(self.books, token=TOKEN, settle_s=0.02)
        self.redis = aioredis.from_url(redis_url, decode_responses=True)
        self.sredis = create_stream_redis(redis_url, block_s=0.2)
        self.routed = DurableLog(self.sredis, ROUTED_TRADES, block_ms=100)
        self.events = DurableLog(self.sredis, ORDER_EVENTS, block_ms=50)
        self.resolutions = DurableLog(self.sredis, MARKET_RESOLUTIONS, block_ms=50)
        self.redemption_events = DurableLog(self.sredis, REDEMPTION_EVENTS, block_ms=50)
        self.router: GrpcServer | None = None
        self.ingest: GrpcServer | None = None
        self.executor: Running | None = None

    async def start(self) -> None:
        await self.fake.start()
        self.router = await start_server("127.0.0.1", 0, lambda s: (
            egrpc.add_RouterServiceServicer_to_server(RouterStandIn(self.routed), s),
            ["tradingtools.execution.v1.RouterService"])[1], security=INTERNAL)
        self.ingest = await start_server("127.0.0.1", 0, lambda s: (
            mgrpc.add_IngestServiceServicer_to_server(IngestStandIn(self.resolutions), s),
            ["tradingtools.market.v1.IngestService"])[1], security=INTERNAL)

    def env(self, *, live: bool = True, **extra: str) -> dict[str, str]:
        assert self.router is not None
        assert self.ingest is not None
        env = {**FAST_ENV, "TT_ROUTER_GRPC_TARGET": f"127.0.0.1:{self.router.port}",
               "TT_INGEST_GRPC_TARGET": f"127.0.0.1:{self.ingest.port}"}
        if live:
            env.update(TT_INSIDERS_API_URL=self.fake.url, TT_INSIDERS_API_TOKEN=TOKEN)
        return {**env, **extra}

    async def start_executor(self, *, live: bool = True, **extra: str) -> Running:
        self.executor = await start(Settings.from_env(self.env(live=live, **extra)), self.db_url, self.redis_url)
        return self.executor

    async def stop(self) -> None:
        if self.executor is not None:
            await self.executor.stop(0)
        if self.router is not None:
            await self.router.stop(0)
        if self.ingest is not None:
            await self.ingest.stop(0)
        await self.fake.stop()
        await self.redis.aclose()
        await self.sredis.aclose()

    async def set_book(self, asset: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]],
                       tick: str = "0.01") -> None:
        """The same book at the fake and in Redis (where the executor's depth check reads it)."""
        self.books.set(asset, bids=bids, asks=asks)
        b, a = self.books.levels(asset)
        now = int(time.time() * 1000)
        await write_book(self.redis, BookSnapshot(asset, CONDITION, tuple(b), tuple(a), Decimal(tick), now, now))

    async def route(self, *orders: epb.Order) -> str:
        return await self.routed.append(epb.RoutedTrade(orders=list(orders)).SerializeToString())

    async def all_events(self) -> list[epb.OrderEvent]:
        out = []
        cursor = "0-0"
        while True:
            batch = await self.events.read(cursor, count=5000, block_ms=0)
            if not batch:
                return out
            cursor = batch[-1][0]
            out.extend(epb.OrderEvent.FromString(p) for _, p in batch)

    async def events_of(self, coid: str) -> list[epb.OrderEvent]:
        return [e for e in await self.all_events() if e.client_order_id == coid]

    async def all_terminal(self, orders: list[epb.Order]) -> bool:
        """True once every order has a terminal event."""
        done = {e.client_order_id for e in await self.all_events() if e.type in TERMINAL_TYPES}
        return all(o.client_order_id in done for o in orders)

    async def terminal(self, coid: str) -> epb.OrderEvent | None:
        for e in reversed(await self.events_of(coid)):
            if e.type in TERMINAL_TYPES:
                return e
        return None


TERMINAL_TYPES = {epb.ORDER_EVENT_TYPE_FILLED, epb.ORDER_EVENT_TYPE_CANCELLED, epb.ORDER_EVENT_TYPE_REJECTED,
                  epb.ORDER_EVENT_TYPE_LOST, epb.ORDER_EVENT_TYPE_FAILED}


def rows(db_url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """The rows of one query (a short connection of its own)."""
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


class AcceptingStore:
    """The part of the order store admission uses: every intent is new, no stored order is known."""

    async def insert_intents(self, items: list[tuple[Ticket, lc.OrderLife]]) -> set[str]:
        return {t.client_order_id for t, _ in items}

    async def order_row(self, client_order_id: str) -> None:
        return None


class NoRedis:
    """A Redis that is not there: every command fails as a lost connection would."""

    def __getattr__(self, name: str) -> Any:
        raise ConnectionError("no redis here")


def make_order(i: int = 0, **kw: Any) -> epb.Order:
    """A copy order as the router emits it."""
    base: dict[str, Any] = dict(
        client_order_id=f"co_test{i:05d}", origin=epb.ORDER_ORIGIN_COPY, subscription_id=f"sub_{i % 7}",
        follower_user_id=f"u_{i}", follower_wallet_id=f"w_{i}", follower_proxy="0x" + f"{i:040x}",
        asset_id=ASSET, condition_id=CONDITION, outcome="Yes", side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK,
        amount_usd="10", reference_price="0.50", max_slippage_bps=200, tick_size="0.01", min_order_size="1",
        mode=cpb.EXECUTION_MODE_LIVE, leader_trade_id="lt_1", leader_tx_hash="0x" + "a" * 64,
        leader_venue_time_ms=int(time.time() * 1000) - 500, received_time_ns=time.time_ns() - 2_000_000,
        routed_time_ns=time.time_ns())
    base.update(kw)
    return epb.Order(**base)


@contextlib.asynccontextmanager
async def running_journal(db_url: str, redis_url: str, release: Release, sweep_interval_s: float,
                          store: type[OrderStore] = OrderStore, **journal_kw: Any
                          ) -> AsyncIterator[tuple[Journal, Any, Any]]:
    """A running journal on real PostgreSQL and Redis: (journal, its Redis, the order-event stream's Redis)."""
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    r = aioredis.from_url(redis_url)
    sr = create_stream_redis(redis_url)
    log_ = DurableLog(sr, ORDER_EVENTS, live=LiveFeed())
    await log_.prime()
    journal = Journal(store(pool), r, log_, release, sweep_interval_s=sweep_interval_s, **journal_kw)
    task = asyncio.create_task(journal.run())
    try:
        yield journal, r, sr
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        await r.aclose()
        await sr.aclose()


def refused_change(i: int) -> Change:
    """A refused order (the insert path of the journal): an order without an asset id is REJECTED."""
    p = prepare(make_order(i, asset_id=""), None, IntakeRules(live_configured=True), time.time_ns())
    assert p.refused
    return Change(p.ticket, p.life, build_event(p.ticket, p.life, lc.OrderRejected(p.life.reason, p.life.detail),
                                                now_ns=time.time_ns()))


def placed_change(t: Ticket, life: lc.OrderLife, now: int) -> tuple[Change, lc.OrderLife]:
    """The journal change of the venue accepting ``t`` (matched), and the order's state after it."""
    event = lc.OrderAccepted(f"v_{t.client_order_id}", "matched")
    after = lc.apply(life, event)
    return Change(t, after, build_event(t, after, event, now_ns=now)), after


def filled_change(t: Ticket, life: lc.OrderLife, size: str, now: int) -> Change:
    """The journal change of ``t`` filling ``size`` at 0.5, with its fill booking."""
    event = lc.OrderFilled(Decimal(size), Decimal("0.5"))
    after = lc.apply(life, event)
    notional = Decimal(size) * Decimal("0.5")
    booking = Booking(f"fill_{t.client_order_id}", Decimal(size), Decimal("0.5"), notional, Decimal(0), True,
                      now // 1_000_000)
    return Change(t, after, build_event(t, after, event, now_ns=now, fill_size=Decimal(size),
                                        fill_price=Decimal("0.5")), booking)


@contextlib.asynccontextmanager
async def running_harness(redis_url: str, db_url: str,
                          fake: type[InsidersFake] | None = None) -> AsyncIterator[Harness]:
    """A started :class:`Harness` (its venue a ``fake`` of that class when given), stopped on the way out (other
    test packages use it too)."""
    h = Harness(redis_url, db_url)
    if fake is not None:
        h.fake = fake(h.books, token=TOKEN, settle_s=0.02)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


PLAIN_BIDS = [("0.49", "500"), ("0.48", "1000")]
PLAIN_ASKS = [("0.50", "100"), ("0.51", "1000")]  # a $10 BUY fills at the best ask


async def copy_to_its_end(h: Harness, i: int = 1, **env: str) -> tuple[epb.Order, epb.OrderEvent]:
    """One $10 copy BUY against a plain book, routed to an executor started with ``env``: the order and its terminal
    event (the venue answers as ``h.fake`` is scripted)."""
    await h.set_book(ASSET, PLAIN_BIDS, PLAIN_ASKS)
    await h.start_executor(**env)  # type: ignore[arg-type]
    o = make_order(i, amount_usd="10")
    await h.route(o)
    done: epb.OrderEvent = await eventually(lambda: h.terminal(o.client_order_id),  # type: ignore[arg-type,return-value]
                                            timeout_s=15)
    return o, done


@pytest.fixture
async def harness(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url) as h:
        yield h


Check = Callable[[], Awaitable[Any]]


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[Any]:
    """A pool (autocommit) on the test's database, closed after the test."""
    p = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        yield p
    finally:
        await p.close()
