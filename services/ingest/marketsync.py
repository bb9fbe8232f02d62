"""Market info and REST ``/book`` resyncs of the books the socket does not keep in sync.

A book is resynced from ``GET /book`` when it is found out of sync (a change that could not be applied,
a crossed book), when it is quiet for ``stale_s``, and when no snapshot came for it ``snapshot_grace_s``
after it was (re)subscribed: after a restart or a reconnect every watched book is in sync again, also
when the venue sends no snapshot (a market whose book is gone answers ``/book`` with 404 meanwhile). A
failed resync is tried again with jittered exponential backoff until the book is in sync or no longer
watched.

Fetches wait in a :class:`~services.ingest.fetchqueue.FetchQueue` (market info first, then the books of held assets,
then the rest) and ``concurrency`` of them run at once, plus one that serves market info alone, so neither a mass
desync nor a slow answer holds back a new market's info; the REST getter's token bucket keeps their rate.

Market info (``tt:market:{asset}``) is written from ``GET /markets/{id}`` once per market, without undoing what was
written while the answer was on its way (a socket ``tick_size_change``, a close) and never opening a closed market
(:func:`write_rest_market`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from common.cancel import reraise_if_cancelling, stop_tasks
from common.clob_rest import DEFAULT_TICK, ClobRest, market_infos, parse_book, parse_market
from common.marketrest import write_rest_market
from common.retry import Backoff
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.fetchqueue import BOOK, HELD_BOOK, LANES, MARKET, FetchQueue
from services.ingest.metrics import IngestMetrics
from services.ingest.model import BAD_FIELD, BAD_SHAPE, ParseError

log = logging.getLogger(__name__)
FEED = "clob_rest"
RESYNC_BACKOFF = Backoff(0.5, 10.0)

class MarketSync:
    """Fetches market info (tick, min size) once per market; resyncs books from REST ``/book``."""

    def __init__(self, rest: ClobRest | None, books: BookState, publisher: BookPublisher, redis: Any,
                 metrics: IngestMetrics, *, stale_s: float = 30.0, snapshot_grace_s: float = 2.0,
                 check_s: float = 1.0, backoff: Backoff = RESYNC_BACKOFF, rng: random.Random | None = None,
                 concurrency: int = 4, held: Callable[[str], bool] = lambda _asset: False,
                 meter: Any | None = None) -> None:
        self.rest = rest
        self.books = books
        self.publisher = publisher
        self.redis = redis
        self.metrics = metrics
        self.stale_s = stale_s
        self.snapshot_grace_s = snapshot_grace_s
        self.check_s = check_s
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.concurrency = concurrency
        self.held = held  # an asset with an open position or an armed trigger: its book is resynced first
        self._markets_done: set[str] = set()
        self._queue = FetchQueue(meter)
        # asset → failed attempts, from when its resync is asked for until it succeeds or the asset is forgotten
        self._resyncs: dict[str, int] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self.resynced = 0

    def want_market(self, asset_id: str, condition_id: str) -> None:
        """Ask for a market's info (no-op after the first successful fetch)."""
        if condition_id and condition_id not in self._markets_done and self.rest is not None:
            self._markets_done.add(condition_id)
            self._queue.put(MARKET, condition_id)

    def resync(self, asset_id: str) -> None:
        """Resync a book from REST ``/book`` (it is stale until then); no-op while its resync is under way."""
        if self.rest is not None and asset_id not in self._resyncs:
            self._resyncs[asset_id] = 0
            self._queue_book(asset_id)

    def _queue_book(self, asset_id: str) -> None:
        self._queue.put(HELD_BOOK if self.held(asset_id) else BOOK, asset_id)

    @property
    def resyncing(self) -> set[str]:
        """Assets whose resync is queued, under way or waiting to be tried again."""
        return set(self._resyncs)

    def check_stale(self, now_ms: int) -> list[str]:
        """Mark stale books (one STALE tick each) and resync them, and the books still without a snapshot
        ``snapshot_grace_s`` after they lost sync; returns the assets that went stale now."""
        stale = self.books.mark_stale(now_ms, int(self.stale_s * 1000))
        for touched in stale:
            self.publisher.mark(touched, time.time_ns())
            self.resync(touched.asset_id)
        for asset_id in self.books.awaiting_snapshot(now_ms, int(self.snapshot_grace_s * 1000)):
            self.resync(asset_id)
        return [t.asset_id for t in stale]

    async def run_stale_checker(self) -> None:
        """Check every ``check_s`` (at least every quarter of the stale age)."""
        while True:
            await asyncio.sleep(max(min(self.stale_s / 4, self.check_s), 0.05))
            self.check_stale(int(time.time() * 1000))

    async def run(self) -> None:
        """Serve fetch requests until cancelled: ``concurrency`` at once, and one more for market info only."""
        workers = [asyncio.create_task(self._serve(lanes), name=f"marketsync-{i}")
                   for i, lanes in enumerate([(MARKET,)] + [LANES] * self.concurrency)]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled():
                    task.result()  # a worker's failure is run's
            raise RuntimeError("the market sync's workers ended")  # cancelled each by a stray cancellation
        finally:
            try:
                await stop_tasks(workers)  # again and again: a client library may swallow a cancellation
            finally:  # after the workers: a fetch failing meanwhile would set a retry
                for handle in self._retries.values():
                    handle.cancel()
                self._retries.clear()

    async def _serve(self, lanes: tuple[str, ...]) -> None:
        while True:
            reraise_if_cancelling()  # a fetch that swallowed its cancellation returns: stop here
            lane, key = await self._queue.get(lanes)
            await self.fetch("market" if lane == MARKET else "book", key)

    async def fetch(self, kind: str, key: str) -> bool:
        """Fetch one market's info (``kind`` "market") or resync one book ("book"); never raises: a failure is
        logged, a bad body counted in ``parse_errors{feed=clob_rest}``, a book's resync retried. True when done."""
        try:
            if kind == "market":
                await self._market(key)
            else:
                await self._book(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - REST trouble: try again (books) or on the next trigger
            reraise_if_cancelling()
            self._failed(kind, key, exc)
            return False
        return True

    def _failed(self, kind: str, key: str, exc: Exception) -> None:
        if isinstance(exc, ParseError):
            self.metrics.parse_error(FEED, exc.kind)
        if kind == "market":
            self._markets_done.discard(key)
            log.warning("clob rest fetch failed", extra={"what": kind, "key": key, "error": repr(exc)[:300]})
            return
        attempts = self._resyncs.get(key)
        if attempts is None:
            return
        self._resyncs[key] = attempts + 1
        delay = self.backoff.delay(min(attempts, 30), self.rng.random())
        earlier = self._retries.pop(key, None)
        if earlier is not None:
            earlier.cancel()
        self._retries[key] = asyncio.get_running_loop().call_later(delay, self._retry, key)
        if attempts % 10 == 0:  # the first failure and every tenth: a book gone for long retries quietly
            log.warning("book resync failed; retrying", extra={"asset_id": key, "attempt": attempts + 1,
                                                               "delay_s": round(delay, 2), "error": repr(exc)[:300]})

    def _retry(self, asset_id: str) -> None:
        self._retries.pop(asset_id, None)
        if asset_id in self._resyncs:
            self._queue_book(asset_id)

    async def _market(self, condition_id: str) -> None:
        assert self.rest is not None
        asked_ms = int(time.time() * 1000)
        page = await self.rest.market(condition_id)
        if not isinstance(page.body, dict):
            raise ParseError(BAD_SHAPE, "market body must be an object")
        infos = market_infos(int(time.time() * 1000), market=parse_market(page.body), default_tick=DEFAULT_TICK)
        for info in infos:
            book = self.books.books.get(info.asset_id)
            if book is not None and book.tick_known and book.tick_size != info.tick_size:
                info = replace(info, tick_size=book.tick_size)  # the websocket's tick is newer
            if await write_rest_market(self.redis, info, asked_ms):
                log.info("market info written since it was asked for kept its tick size and state",
                         extra={"asset_id": info.asset_id, "condition_id": condition_id})

    async def _book(self, asset_id: str) -> None:
        assert self.rest is not None
        book = self.books.books.get(asset_id)
        if book is None or (book.synced and not book.stale):  # forgotten, or in sync again (a socket snapshot)
            self._resyncs.pop(asset_id, None)
            return
        page = await self.rest.book(asset_id)
        if not isinstance(page.body, dict):
            raise ParseError(BAD_SHAPE, "book body must be an object")
        msg = parse_book(page.body)
        if msg.asset_id != asset_id:
            raise ParseError(BAD_FIELD, "asset_id is not the asset asked for")
        for touched in self.books.apply(msg, int(time.time() * 1000)):
            self.publisher.mark(touched, page.received_ns)
        self._resyncs.pop(asset_id, None)
        self.resynced += 1
