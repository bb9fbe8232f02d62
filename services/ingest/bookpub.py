"""Book side effects: snapshots to Redis, ticks to the PRICE_TICKS log, market info and stale resync.

The publisher coalesces: while one Redis round trip is in flight, further changes accumulate and go
in the next pipeline, so a burst of deltas costs one write per asset, yet every tick (built when the
change happened) is appended in order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from common.decimals import fmt
from common.marketstate import book_key, market_key, write_market
from common.retry import Backoff
from common.streams import PRICE_TICKS
from services.ingest import clob
from services.ingest.aio import reraise_if_cancelling
from services.ingest.books import BookState, Touched
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError
from services.ingest.restclient import ClobRest
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)
_KIND_NAMES = {v: k for k, v in mpb.TickKind.items()}

# Every tick of a flush appended in one command: redis-py's pure-Python client costs ~10 µs to pack
# and parse each command, so one XADD per tick in a pipeline cost more than the work it recorded.
# Entries stay one tick each (field ``p``), so every reader of the log sees the same thing.
_APPEND_TICKS = """
local maxlen = ARGV[1]
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'p', ARGV[i])
end
return #ARGV - 1
"""


class BookPublisher:
    """Writes dirty books and queued ticks to Redis in coalesced pipelines."""

    def __init__(self, redis: Any, books: BookState, metrics: IngestMetrics, *, depth: int = 100,
                 maxlen: int = 1_000_000, stream: str = PRICE_TICKS,
                 on_market: Callable[[str, str], None] = lambda _a, _c: None) -> None:
        self.redis = redis
        self.books = books
        self.metrics = metrics
        self.depth = depth
        self.maxlen = maxlen
        self.stream = stream
        self.on_market = on_market
        self._dirty: dict[str, None] = {}
        self._ticks: list[bytes] = []
        self._tick_sizes: dict[str, Decimal] = {}
        self._wake = asyncio.Event()
        self.flushes = 0

    def mark(self, touched: Touched, recv_ns: int) -> None:
        """Record a change: the book is rewritten, and a tick goes out when ``touched.emit``."""
        asset_id, kind, emit = touched
        self._dirty[asset_id] = None
        book = self.books.books.get(asset_id)
        if book is not None and book.condition_id:
            self.on_market(asset_id, book.condition_id)
        if emit:
            tick = self.books.price_tick(asset_id, kind, recv_ns)
            self._ticks.append(tick.SerializeToString())
            self.metrics.tick(_KIND_NAMES.get(kind) or mpb.TickKind.Name(kind))
            if kind == mpb.TICK_KIND_TICK_SIZE_CHANGE and book is not None:
                self._tick_sizes[asset_id] = book.tick_size
        if not self._wake.is_set():
            self._wake.set()

    async def flush(self) -> None:
        """Write everything pending in one pipeline (re-queued if Redis fails)."""
        dirty, ticks, tick_sizes = self._dirty, self._ticks, self._tick_sizes
        self._dirty, self._ticks, self._tick_sizes = {}, [], {}
        if not (dirty or ticks or tick_sizes):
            return
        pipe = self.redis.pipeline(transaction=False)
        snapshots: dict[str, bytes] = {}
        for asset_id in dirty:
            book = self.books.books.get(asset_id)
            if book is not None:
                snapshots[book_key(asset_id)] = book.snapshot(self.depth).to_json()
        if snapshots:
            pipe.mset(snapshots)
        for asset_id, size in tick_sizes.items():
            pipe.hset(market_key(asset_id), mapping={"asset_id": asset_id, "tick_size": fmt(size),
                                                     "updated_ms": str(int(time.time() * 1000))})
        for start in range(0, len(ticks), 1000):  # EVAL (not EVALSHA): no SCRIPT EXISTS round trip per flush
            pipe.eval(_APPEND_TICKS, 1, self.stream, self.maxlen, *ticks[start:start + 1000])
        try:
            await pipe.execute()
            self.flushes += 1
        except BaseException:
            for asset_id in dirty:
                self._dirty.setdefault(asset_id, None)
            self._ticks[:0] = ticks
            for asset_id, size in tick_sizes.items():
                self._tick_sizes.setdefault(asset_id, size)
            raise

    async def run(self) -> None:
        """Flush whenever something changed, until cancelled; Redis failures are retried."""
        rng = random.Random()
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retry, keep the pending state
                reraise_if_cancelling()
                delay = Backoff(0.05, 2.0).delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("book publish failed", extra={"error": repr(exc)[:300], "delay_s": delay})
                self._wake.set()
                await asyncio.sleep(delay)


class MarketSync:
    """Fetches market info (tick, min size) once per market, resyncs stale books from REST ``/book``."""

    def __init__(self, rest: ClobRest | None, books: BookState, publisher: BookPublisher, redis: Any,
                 metrics: IngestMetrics, *, stale_s: float = 30.0) -> None:
        self.rest = rest
        self.books = books
        self.publisher = publisher
        self.redis = redis
        self.metrics = metrics
        self.stale_s = stale_s
        self._markets_done: set[str] = set()
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def want_market(self, asset_id: str, condition_id: str) -> None:
        """Ask for a market's info (no-op after the first successful fetch)."""
        if condition_id and condition_id not in self._markets_done and self.rest is not None:
            self._markets_done.add(condition_id)
            self._queue.put_nowait(("market", condition_id))

    def check_stale(self, now_ms: int) -> list[str]:
        """Mark stale books (one STALE tick each) and queue their REST resync."""
        stale = self.books.mark_stale(now_ms, int(self.stale_s * 1000))
        for touched in stale:
            self.publisher.mark(touched, time.time_ns())
            if self.rest is not None:
                self._queue.put_nowait(("book", touched.asset_id))
        return [t.asset_id for t in stale]

    async def run_stale_checker(self) -> None:
        """Check staleness every quarter of the stale age."""
        while True:
            await asyncio.sleep(max(self.stale_s / 4, 0.05))
            self.check_stale(int(time.time() * 1000))

    async def run(self) -> None:
        """Serve fetch requests until cancelled."""
        while True:
            kind, key = await self._queue.get()
            try:
                if kind == "market":
                    await self._market(key)
                else:
                    await self._book(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - REST trouble: try again on the next trigger
                reraise_if_cancelling()
                if kind == "market":
                    self._markets_done.discard(key)
                log.warning("clob rest fetch failed", extra={"what": kind, "key": key, "error": repr(exc)[:300]})

    async def _market(self, condition_id: str) -> None:
        assert self.rest is not None
        page = await self.rest.market(condition_id)
        if not isinstance(page.body, dict):
            raise ParseError("BAD_SHAPE", "market body must be an object")
        for info in clob.parse_market(page.body, int(time.time() * 1000)):
            book = self.books.books.get(info.asset_id)
            if book is not None and book.synced and book.tick_size != info.tick_size:
                info = replace(info, tick_size=book.tick_size)  # the websocket's tick is newer
            await write_market(self.redis, info)

    async def _book(self, asset_id: str) -> None:
        assert self.rest is not None
        if asset_id not in self.books.books or not self.books.books[asset_id].stale:
            return
        page = await self.rest.book(asset_id)
        if not isinstance(page.body, dict):
            raise ParseError("BAD_SHAPE", "book body must be an object")
        msg = clob.parse_book(page.body)
        for touched in self.books.apply(msg, int(time.time() * 1000)):
            self.publisher.mark(touched, page.received_ns)
