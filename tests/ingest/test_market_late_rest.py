"""Market info from CLOB REST ``/markets/{id}`` that lands after a newer write of ``tt:market:{asset}``: a socket
``tick_size_change`` or a close (a ``market_resolved`` frame) written while the answer was on its way, or a close the
REST answer lags behind. Real Redis, a real HTTP server whose answer is released at a chosen moment, and a TCP proxy
in front of Redis that holds the market sync's connection (the write in flight) until released."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from common.clob_rest import ClobRest
from common.marketstate import read_market
from common.resp import RespConnection
from common.restget import RestGetter
from common.streams import MARKET_RESOLUTIONS, PRICE_TICKS, DurableLog
from services.ingest import clob
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.marketsync import MarketSync
from services.ingest.metrics import IngestMetrics
from services.ingest.resolution import NO_MARKET_INFO
from services.ingest.resolutions import ResolutionRecorder, SocketResolutions, close_markets

pytestmark = pytest.mark.integration
D = Decimal
CID = "0x" + "4e" * 32
YES, NO = "7" * 70, "8" * 70


def market_body(*, tick: str = "0.01", closed: bool = False, neg_risk: bool = True) -> bytes:
    """``GET /markets/{CID}`` of an open (or closed) two-token market, minimum order 5."""
    return orjson.dumps({
        "condition_id": CID, "market_slug": "will-it", "minimum_tick_size": float(tick), "minimum_order_size": 5,
        "neg_risk": neg_risk, "closed": closed, "active": True, "accepting_orders": not closed,
        "tokens": [{"token_id": YES, "outcome": "Yes", "winner": False},
                   {"token_id": NO, "outcome": "No", "winner": False}]})


class HeldRest:
    """CLOB REST whose ``/markets`` answer waits for :meth:`release` (``asked`` is set when the request came)."""

    def __init__(self, body: bytes, *, held: bool = True) -> None:
        self.body = body
        self.asked = asyncio.Event()
        self.released = asyncio.Event()
        if not held:
            self.released.set()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> HeldRest:
        app = web.Application()
        app.router.add_get("/markets/{cid}", self._answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def _answer(self, _request: web.Request) -> web.Response:
        self.asked.set()
        await self.released.wait()
        return web.Response(body=self.body, content_type="application/json")

    def release(self) -> None:
        self.released.set()

    async def stop(self) -> None:
        self.released.set()
        if self.runner is not None:
            await self.runner.cleanup()


class HeldProxy:
    """A TCP proxy to Redis that holds every new connection (``connected`` set) until :meth:`release`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.connected = asyncio.Event()
        self.released = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> HeldProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await self.released.wait()
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    def release(self) -> None:
        self.released.set()

    async def stop(self) -> None:
        self.released.set()
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def book_feed(redis_url: str) -> tuple[BookState, BookPublisher]:
    """YES followed by the book feed, its venue tick 0.01 known from a book frame."""
    books = BookState()
    books.track(YES)
    books.apply(clob.parse_event({"event_type": "book", "asset_id": YES, "market": CID, "bids": [], "asks": [],
                                  "tick_size": "0.01", "timestamp": "1"}), 1)
    return books, BookPublisher(lambda: RespConnection.open(redis_url), books, IngestMetrics())


def sync_of(rest: HeldRest, http: aiohttp.ClientSession, books: BookState, publisher: BookPublisher,
            redis: Any) -> MarketSync:
    return MarketSync(ClobRest(RestGetter(http, feed="clob_rest"), rest.url), books, publisher, redis,
                      IngestMetrics())


async def test_a_close_written_while_the_rest_answer_was_on_its_way_is_not_undone(
        redis_url: str, r: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    """A market_resolved frame (no market info cached yet: the REST fetch is what would cache it) closes the
    market while REST ``/markets`` is answering; the answer, read before the close, says open."""
    rest = await HeldRest(market_body()).start()
    books, publisher = book_feed(redis_url)
    sync = sync_of(rest, http, books, publisher, r)
    socket = SocketResolutions(ResolutionRecorder(None, DurableLog(r, MARKET_RESOLUTIONS), DurableLog(r, PRICE_TICKS),
                                                  r, IngestMetrics()),
                               lambda _cid: None, books.books, r, IngestMetrics())
    try:
        fetch = asyncio.create_task(sync.fetch("market", CID))
        await rest.asked.wait()
        msg = clob.ResolvedMsg(CID, (YES, NO), YES, int(time.time() * 1000), "Yes")
        assert await socket.handle(msg, time.time_ns()) == NO_MARKET_INFO
        info = await read_market(r, YES)
        assert info is not None and info.closed and not info.accepting_orders
        rest.release()
        assert await fetch
        info = await read_market(r, YES)
        assert info is not None
        assert (info.closed, info.accepting_orders) == (True, False), "the older REST answer opened it again"
        # what only REST knows is still cached (the socket's resolution path needs the market and outcome index)
        assert (info.condition_id, info.outcome_index, info.neg_risk, info.min_order_size) == (CID, 0, True, D(5))
    finally:
        publisher.close()
        await rest.stop()


async def test_a_rest_answer_lagging_a_close_does_not_open_the_market_again(
        redis_url: str, r: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    """REST lags the socket's market_resolved (the README: an OPEN answer after a socket close is REST lagging): a
    fetch asked after the close, answering ``closed: false``, must not reopen it."""
    rest = await HeldRest(market_body(), held=False).start()
    books, publisher = book_feed(redis_url)
    sync = sync_of(rest, http, books, publisher, r)
    try:
        await close_markets(r, CID, [YES, NO])
        assert await sync.fetch("market", CID)
        for asset in (YES, NO):
            info = await read_market(r, asset)
            assert info is not None and (info.closed, info.accepting_orders) == (True, False), asset
            assert info.condition_id == CID
    finally:
        publisher.close()
        await rest.stop()


async def test_a_tick_size_change_written_while_the_rest_answer_is_written_is_kept(
        redis_url: str, r: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    """REST says 0.01 (the book's tick when the answer came); the socket's tick_size_change to 0.001 is applied and
    written while the market sync's write is still on its way to Redis (its connection being opened). The stored
    tick must be 0.001: at 0.01 every copy is refused INVALID_ORDER_MIN_TICK_SIZE."""
    rest = await HeldRest(market_body(tick="0.01"), held=False).start()
    books, publisher = book_feed(redis_url)
    host, port = r.connection_pool.connection_kwargs["host"], r.connection_pool.connection_kwargs["port"]
    proxy = await HeldProxy(host, port).start()
    slow = aioredis.from_url(proxy.url, decode_responses=True)  # the sync's client: its write waits in the proxy
    sync = sync_of(rest, http, books, publisher, slow)
    try:
        fetch = asyncio.create_task(sync.fetch("market", CID))
        await proxy.connected.wait()
        frame = {"event_type": "tick_size_change", "asset_id": YES, "market": CID, "old_tick_size": "0.01",
                 "new_tick_size": "0.001", "timestamp": str(int(time.time() * 1000))}
        for touched in books.apply(clob.parse_event(frame), int(time.time() * 1000)):
            publisher.mark(touched, time.time_ns())
        await publisher.flush()
        assert await r.hget(f"tt:market:{YES}", "tick_size") == "0.001"
        proxy.release()
        assert await fetch
        info = await read_market(r, YES)
        assert info is not None and info.tick_size == D("0.001"), f"stored tick {info and info.tick_size}"
        assert (info.condition_id, info.min_order_size, info.neg_risk) == (CID, D(5), True)
    finally:
        publisher.close()
        await slow.aclose()
        await proxy.stop()
        await rest.stop()


async def test_market_info_takes_the_rest_tick_unless_the_socket_named_one(
        redis_url: str, r: aioredis.Redis, http: aiohttp.ClientSession) -> None:
    """Nothing written meanwhile: the answer is stored whole, a token's tick from its book when the venue named one
    on the socket (newer than REST's), else REST's."""
    rest = await HeldRest(market_body(tick="0.001"), held=False).start()
    books, publisher = book_feed(redis_url)  # YES: the socket named 0.01
    sync = sync_of(rest, http, books, publisher, r)
    try:
        await r.hset(f"tt:market:{YES}", mapping={"asset_id": YES, "tick_size": "0.1", "updated_ms": "1"})
        assert await sync.fetch("market", CID)
        yes, no = await read_market(r, YES), await read_market(r, NO)
        assert yes is not None and no is not None
        assert (yes.tick_size, no.tick_size) == (D("0.01"), D("0.001"))
        assert (yes.closed, yes.accepting_orders, yes.condition_id, no.outcome_index) == (False, True, CID, 1)
    finally:
        publisher.close()
        await rest.stop()
