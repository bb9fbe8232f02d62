"""The poller and the market sync fed fuzzed bodies over a real HTTP client and a loopback server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from common.clob_rest import ClobRest
from common.resp import RespConnection
from common.restget import RestGetter
from common.retry import Backoff
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.identity import Identified
from services.ingest.marketsync import MarketSync
from services.ingest.metrics import IngestMetrics
from services.ingest.poller import Poller
from services.ingest.ratelimit import TokenBucket
from services.ingest.restclient import DataApi
from services.ingest.targets import FollowedLeaders
from tests.ingest import fuzzframes as fz
from tests.ingest.conftest import RECV_NS


class Served:
    """An HTTP server on loopback answering every GET with the current body (200, JSON)."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.requests = 0
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def answer(self, _request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(body=self.body, content_type="application/json")


class Sink:
    """The trade sink as the poller sees it: records what it is handed."""

    def __init__(self) -> None:
        self.items: list[Identified] = []

    async def submit(self, items: list[Identified]) -> list[str | None]:
        self.items.extend(items)
        return [None] * len(items)


class Hashes:
    """``HGET`` / ``HSET`` of the poll cursors and market info, in memory."""

    def __init__(self) -> None:
        self.h: dict[str, dict[str, str]] = {}
        self.writes = 0

    async def hget(self, key: str, field: str) -> str | None:
        return self.h.get(key, {}).get(field)

    async def hset(self, key: str, field: str | None = None, value: str | None = None,
                   mapping: dict[str, str] | None = None) -> None:
        self.writes += 1
        self.h.setdefault(key, {}).update(mapping or {str(field): str(value)})

    async def eval(self, _script: str, _numkeys: int, key: str, _asked_ms: str, *pairs: str) -> int:
        """The market sync's REST write (one Lua call in Redis), as a plain HSET."""
        self.writes += 1
        self.h.setdefault(key, {}).update(zip(pairs[::2], pairs[1::2], strict=True))
        return 0


class RestHarness:
    """The poller and the market sync over the real HTTP client, one event loop for all examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.served = Served()
        self.loop.run_until_complete(self.served.start())
        self.metrics = IngestMetrics()
        self.http = self.loop.run_until_complete(new_session())
        bucket = TokenBucket(1e9, 10**9, time.monotonic())
        self.sink, self.redis = Sink(), Hashes()
        data = RestGetter(self.http, bucket, feed="data_api", on_status=self.metrics.poll)
        self.poller = Poller(DataApi(data, self.served.url), self.sink, FollowedLeaders(),  # type: ignore[arg-type]
                             self.redis, self.metrics, retry_s=3600.0, clock=lambda: RECV_NS / 1e9)
        self.books = BookState()
        self.books.track(fz.REST_BOOK["asset_id"])
        clob_rest = ClobRest(RestGetter(self.http, bucket, feed="clob_rest"), self.served.url)
        self.sync = MarketSync(clob_rest, self.books, BookPublisher(no_redis, self.books, self.metrics),
                               self.redis, self.metrics, backoff=Backoff(3600.0, 3600.0))

    def run(self, body: bytes, call: Callable[[], Awaitable[Any]]) -> Any:
        self.served.body = body
        return self.loop.run_until_complete(call())

    def close(self) -> None:
        for handle in self.poller._timers:
            handle.cancel()
        self.loop.run_until_complete(self.http.close())
        assert self.served.runner is not None
        self.loop.run_until_complete(self.served.runner.cleanup())
        self.loop.close()


async def new_session() -> aiohttp.ClientSession:
    """An HTTP session made on the harness' loop."""
    return aiohttp.ClientSession()


async def no_redis() -> RespConnection:
    """The market sync's Redis, which the fuzzed cases never reach."""
    raise AssertionError("the fuzzed market sync writes no book")
