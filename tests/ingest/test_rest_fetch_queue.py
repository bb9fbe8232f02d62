"""The market sync's REST fetch queue: market info ahead of book resyncs, the books of held assets (open positions,
armed triggers) ahead of the rest, a few fetches in flight at once under the token bucket (one slow answer does not
stall the others), a book never fetched twice at once, and cancellation that leaves nothing running. Real Redis, a
real HTTP server standing in for CLOB REST."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from common.clob_rest import ClobRest
from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, WATCH_TRIGGERS, read_market
from common.resp import RespConnection
from common.restget import Page, RestGetter
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.marketsync import MarketSync
from services.ingest.metrics import IngestMetrics
from services.ingest.ratelimit import TokenBucket
from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory

pytestmark = pytest.mark.integration
CID = "0x" + "5a" * 32
YES, NO = "61" * 35, "62" * 35


def asset(i: int) -> str:
    return str(10**70 + i)


class FakeClob:
    """CLOB REST ``/book`` and ``/markets/{id}``: every request's key in arrival order (with its time), the most
    answers under way at once, and the assets whose ``/book`` answer waits for :meth:`release`."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.times: list[float] = []
        self.held: dict[str, asyncio.Event] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeClob:
        app = web.Application()
        app.router.add_get("/book", self._book)
        app.router.add_get("/markets/{cid}", self._market)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    def hold(self, asset_id: str) -> None:
        self.held[asset_id] = asyncio.Event()

    def release(self, asset_id: str) -> None:
        self.held.pop(asset_id).set()

    def asked(self, key: str) -> int:
        return self.order.count(key)

    async def _answer(self, key: str, body: dict[str, Any]) -> web.Response:
        self.order.append(key)
        self.times.append(time.monotonic())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            held = self.held.get(key)
            if held is not None:
                await held.wait()
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        finally:
            self.in_flight -= 1

    async def _book(self, request: web.Request) -> web.Response:
        token = request.query["token_id"]
        return await self._answer(token, {
            "market": CID, "asset_id": token, "timestamp": str(int(time.time() * 1000)), "hash": "h",
            "bids": [{"price": "0.40", "size": "10"}], "asks": [{"price": "0.45", "size": "10"}],
            "tick_size": "0.01", "min_order_size": "5", "neg_risk": False, "last_trade_price": ""})

    async def _market(self, request: web.Request) -> web.Response:
        return await self._answer(request.match_info["cid"], {
            "condition_id": CID, "market_slug": "new", "minimum_tick_size": 0.01, "minimum_order_size": 5,
            "neg_risk": False, "closed": False, "active": True, "accepting_orders": True,
            "tokens": [{"token_id": YES, "outcome": "Yes", "winner": False},
                       {"token_id": NO, "outcome": "No", "winner": False}]})

    async def stop(self) -> None:
        for event in self.held.values():
            event.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeClob]:
    server = await FakeClob().start()
    yield server
    await server.stop()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def books() -> BookState:
    return BookState()


@pytest.fixture
async def publisher(redis_url: str, books: BookState) -> AsyncIterator[BookPublisher]:
    pub = BookPublisher(lambda: RespConnection.open(redis_url), books, IngestMetrics())
    yield pub
    pub.close()


def out_of_sync(books: BookState, *assets: str) -> None:
    for a in assets:
        books.track(a)  # tracked, no snapshot yet: its resync fetches /book


@contextlib.asynccontextmanager
async def running(sync: MarketSync) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sync.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)
        assert task.done(), "run() did not stop when cancelled"
        with contextlib.suppress(asyncio.CancelledError):
            await task


def getter(http: aiohttp.ClientSession, bucket: TokenBucket | None = None) -> RestGetter:
    return RestGetter(http, bucket, feed="clob_rest")


async def test_market_info_is_fetched_ahead_of_a_mass_of_book_resyncs(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    """After a reconnect without snapshots thousands of books wait for ``/book``; a new market's info (the router
    copies its trades with it) is asked for after them and must not wait for them all."""
    assets = [asset(i) for i in range(40)]
    out_of_sync(books, *assets)
    sync = MarketSync(ClobRest(getter(http), fake.url), books, publisher, r, IngestMetrics())
    for a in assets:
        sync.resync(a)
    sync.want_market(YES, CID)
    async with running(sync):
        await eventually(lambda: len(fake.order) == 41, message="every fetch made")
        assert fake.order.index(CID) < 5, f"market info fetched as request {fake.order.index(CID) + 1} of 41"
        info = await eventually(lambda: read_market(r, YES))
        assert info.condition_id == CID


async def test_one_slow_answer_does_not_stall_the_fetches_behind_it(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    slow, others = asset(0), [asset(i) for i in range(1, 10)]
    out_of_sync(books, slow, *others)
    fake.hold(slow)  # its answer does not come (a REST timeout in the making)
    sync = MarketSync(ClobRest(getter(http), fake.url), books, publisher, r, IngestMetrics())
    for a in (slow, *others):
        sync.resync(a)
    async with running(sync):
        await eventually(lambda: all(books.books[a].synced for a in others), message="the others resynced")
        sync.want_market(YES, CID)
        await eventually(lambda: read_market(r, YES), message="market info fetched meanwhile")
        assert not books.books[slow].synced and sync.resyncing == {slow}
        sync.resync(slow)  # asked again while its fetch is under way: not fetched twice
        sync.resync(slow)
        await asyncio.sleep(0.1)
        assert fake.asked(slow) == 1
        fake.release(slow)
        await eventually(lambda: books.books[slow].synced)
        assert fake.asked(slow) == 1 and sync.resyncing == set()
        assert fake.most_in_flight <= 5  # four fetches and the one kept for market info


async def test_books_of_held_assets_are_resynced_before_the_rest(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    plain = [asset(i) for i in range(30)]
    held = [asset(100 + i) for i in range(3)]  # an open position or an armed trigger
    out_of_sync(books, *plain, *held)
    sync = MarketSync(ClobRest(getter(http), fake.url), books, publisher, r, IngestMetrics(), concurrency=1,
                      held=set(held).__contains__)
    for a in (*plain, *held):
        sync.resync(a)
    sync.want_market(YES, CID)
    async with running(sync):
        await eventually(lambda: len(fake.order) == 34)
        assert CID in fake.order[:2]
        assert set(fake.order[:4]) == {CID, *held}, fake.order[:4]


async def test_fetches_in_flight_keep_to_the_token_bucket(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    assets = [asset(i) for i in range(7)]
    out_of_sync(books, *assets)
    bucket = TokenBucket(20.0, 1, time.monotonic())
    sync = MarketSync(ClobRest(getter(http, bucket), fake.url), books, publisher, r, IngestMetrics(),
                      concurrency=4)
    for a in assets:
        sync.resync(a)
    async with running(sync):
        await eventually(lambda: all(books.books[a].synced for a in assets))
    assert fake.times[-1] - fake.times[0] >= 6 / 20 * 0.9  # 7 requests at 20/s, one token banked


async def test_cancelling_run_stops_every_fetch_and_retry(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    assets = [asset(i) for i in range(6)]
    out_of_sync(books, *assets)
    for a in assets[:4]:
        fake.hold(a)
    sync = MarketSync(ClobRest(getter(http), fake.url), books, publisher, r, IngestMetrics(), concurrency=4)
    before = asyncio.all_tasks()
    for a in assets:
        sync.resync(a)
    async with running(sync) as task:
        await eventually(lambda: fake.in_flight == 4)
        sync._failed("book", assets[5], RuntimeError("retry later"))  # a retry waiting on its timer
    assert task.cancelled()
    assert not sync._retries
    left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert not [t for t in left if "MarketSync" in repr(t.get_coro())], left


class SwallowingRest(ClobRest):
    """A client library that swallows a cancellation and asks again (redis-py does on a read timeout)."""

    async def book(self, asset_id: str) -> Page:
        try:
            return await super().book(asset_id)
        except asyncio.CancelledError:
            return await super().book(asset_id)


async def test_run_stops_when_a_fetch_swallowed_its_cancellation(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    slow = asset(0)
    out_of_sync(books, slow)
    fake.hold(slow)
    sync = MarketSync(SwallowingRest(getter(http), fake.url), books, publisher, r, IngestMetrics(), concurrency=2)
    sync.resync(slow)
    async with running(sync) as task:
        await eventually(lambda: fake.in_flight == 1)
    assert task.cancelled() and fake.asked(slow) == 2  # asked again after the first cancellation, then stopped


def queued(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {str(p.attributes["kind"]): int(getattr(p, "value")) for rm in data.resource_metrics  # noqa: B009
            for sm in rm.scope_metrics for m in sm.metrics if m.name == "ingest.rest_fetches_queued"
            for p in m.data.data_points if p.attributes}


async def test_queue_depth_is_exported_by_kind_from_the_start(
        fake: FakeClob, http: aiohttp.ClientSession, r: aioredis.Redis, books: BookState,
        publisher: BookPublisher) -> None:
    reader = InMemoryMetricReader()
    held = asset(100)
    sync = MarketSync(ClobRest(getter(http), fake.url), books, publisher, r, IngestMetrics(),
                      held={held}.__contains__, meter=MeterProvider(metric_readers=[reader]).get_meter("t"))
    assert queued(reader) == {"market": 0, "book_held": 0, "book": 0}
    out_of_sync(books, held, asset(1), asset(2))
    for a in (held, asset(1), asset(2)):
        sync.resync(a)
    sync.want_market(YES, CID)
    assert queued(reader) == {"market": 1, "book_held": 1, "book": 2}
    async with running(sync):
        await eventually(lambda: all(books.books[a].synced for a in (held, asset(1), asset(2))))
        assert queued(reader) == {"market": 0, "book_held": 0, "book": 0}


async def test_ingest_takes_the_rest_tuning_and_knows_held_assets_from_the_watch_sets(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    yes, no = sim.add_market().tokens
    other = asset(7)
    await client.sadd(WATCH_POSITIONS, yes)
    await client.sadd(WATCH_TRIGGERS, no)
    await client.publish(WATCH_CHANNEL, WATCH_POSITIONS)
    app = await run_ingest(clob_rest_concurrency=2, clob_rest_rate_per_s=50.0)
    sync = app.market_sync
    await eventually(lambda: sync.held(yes) and sync.held(no), message="positions and armed triggers are held")
    assert not sync.held(other)  # a leader-trade asset alone
    assert sync.rest is not None and isinstance(sync.rest.getter.bucket, TokenBucket)
    assert (sync.concurrency, sync.rest.getter.bucket.rate, sync.rest.getter.bucket.burst) == (2, 50.0, 50.0)
    await client.aclose()
