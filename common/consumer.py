"""Resumable consumers of an upstream stream: handle each item, save the cursor, reconnect on failure.

A consumer saves its cursor only after handling an item, so nothing is lost, and an item is
redelivered only if the consumer died between handling it and saving the cursor (downstream
idempotency keys make that harmless). Items a handler keeps failing on are dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from common.cancel import reraise_if_cancelling
from common.dead_letters import DeadLetters as DeadLetters  # where its importers have always found it
from common.logtrim import readers_key, wall_ms
from common.outages import storage_unavailable
from common.retry import Backoff
from common.streams import START_NEW, cursor_seconds, stream_label

log = logging.getLogger(__name__)

T = TypeVar("T")


MAX_TRANSIENT_BACKOFF_ATTEMPT = 6  # a storage outage is retried every Backoff.delay(6) or so, for as long as it lasts


class CursorStore(Protocol):
    """Where a consumer keeps its position."""

    async def get(self, consumer: str) -> str | None:
        """The saved cursor, or None."""

    async def set(self, consumer: str, cursor: str) -> None:
        """Save the cursor."""


class RedisCursorStore:
    """Cursors in Redis under ``tt:cursor:<consumer>``."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def get(self, consumer: str) -> str | None:
        """The saved cursor, or None."""
        raw = await self.redis.get(f"tt:cursor:{consumer}")
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def set(self, consumer: str, cursor: str) -> None:
        """Save the cursor."""
        await self.redis.set(f"tt:cursor:{consumer}", cursor)

    async def register(self, consumer: str, log_name: str, now_ms: int) -> None:
        """Register ``consumer`` as a reader of ``log_name`` (see ``common.logtrim``)."""
        await self.redis.hset(readers_key(log_name), consumer, str(now_ms))


@dataclass
class ConsumerStats:
    """Counters of a resumable consumer (also exported as metrics by the services)."""

    handled: int = 0
    reconnects: int = 0
    handler_errors: int = 0
    transient_errors: int = 0  # of those, storage outages (retried until over)
    dead_lettered: int = 0
    batches: int = 0
    batch_fallbacks: int = 0
    last_cursor: str = ""
    connected: bool = False
    errors: list[str] = field(default_factory=list)


DEFAULT_BACKOFF = Backoff(0.05, 2.0)

OpenStream = Callable[[str], AsyncIterator[tuple[str, T]]]


class ResumableConsumer(Generic[T]):
    """Consume an upstream stream from the saved cursor, handle each item, save the cursor, reconnect on failure.

    ``open_stream(after_cursor)`` yields ``(cursor, item)``: typically a gRPC server stream. A handler
    that keeps failing for an item (``max_handler_attempts``) has that item dead-lettered through
    ``dead_letter`` and is moved past, so one poison event cannot stall the pipeline; a failure that
    ``transient`` recognises (by default :func:`storage_unavailable`) does not count: the item is retried
    until the outage is over, since dead-lettering it lost a copy or an exit to a brief one. The cursor is
    saved behind the handling, at most once per ``save_interval_s``: a crash redelivers at most the
    items of that interval (downstream idempotency keys make that harmless), never one it dead-lettered (its
    cursor is saved before the next item).

    With ``handle_batch``, the items that arrived while the previous batch was being handled go
    together, in stream order, up to ``max_batch`` (a lone item is handed over at once, as a list of
    one). A batch that raises is handled again item by item through ``handle``, with the retries and
    dead-lettering above, so ``handle_batch`` must leave things such that re-handling its items one
    by one is correct (it must anyway: a crash redelivers them). With ``item_bytes`` (an item's size), a
    batch also stops at ``max_batch_bytes`` (it holds at least one item), and the items read ahead of the
    handling are bounded in bytes as well as in count, four batches' worth: a log's items can differ in size by
    three orders of magnitude (a 10,000-follower fan-out's parts are about 1 MB each), so a count alone bounds
    no memory.

    ``stream`` names the log read (``tt:stream:...``) for the metrics: ``consumer.position_time`` (the time in
    the id of the last item handled) against the log's ``stream.last_entry_time`` is the consumer's lag. A
    consumer naming its log registers as its reader before reading its cursor, so the log's writer keeps the
    entries it has not read (``common.logtrim``).
    """

    def __init__(self, name: str, open_stream: OpenStream[T], handle: Callable[[T], Awaitable[None]],
                 cursors: CursorStore, *, start: str = START_NEW,
                 dead_letter: Callable[[str, T, BaseException], Awaitable[None]] | None = None,
                 backoff: Backoff = DEFAULT_BACKOFF, max_handler_attempts: int = 5,
                 rng: random.Random | None = None, save_interval_s: float = 0.02,
                 handle_batch: Callable[[list[T]], Awaitable[None]] | None = None,
                 max_batch: int = 256, item_bytes: Callable[[T], int] | None = None,
                 max_batch_bytes: int = 16 << 20,
                 transient: Callable[[BaseException], bool] = storage_unavailable, stream: str = "") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_batch_bytes < 1:
            raise ValueError("max_batch_bytes must be at least 1")
        self.name = name
        self.open_stream = open_stream
        self.handle = handle
        self.handle_batch = handle_batch
        self.max_batch = max_batch
        self.item_bytes = item_bytes
        self.max_batch_bytes = max_batch_bytes
        self.cursors = cursors
        self.start = start
        self.dead_letter = dead_letter
        self.backoff = backoff
        self.max_handler_attempts = max_handler_attempts
        self.transient = transient
        self.rng = rng or random.Random()
        self.save_interval_s = save_interval_s
        self.stats = ConsumerStats()
        self._attempt = 0
        self._pending: str | None = None
        self._saved: str | None = None
        self._dirty = asyncio.Event()
        self._save_lock = asyncio.Lock()
        self.stream = stream
        self.resumed_from = ""  # the cursor of the last (re)connect
        _CONSUMERS.add(self)

    async def run(self) -> None:
        """Run until cancelled (the last handled cursor is saved on the way out)."""
        saver = asyncio.create_task(self._saver(), name=f"cursor-saver:{self.name}")
        try:
            await self._consume()
        finally:
            saver.cancel()
            # bounded: a client library that swallows the cancellation must not hang shutdown
            await asyncio.wait({saver}, timeout=1.0)
            if self._pending is not None and self._pending != self._saved:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.cursors.set(self.name, self._pending), timeout=1.0)

    async def _consume(self) -> None:
        self._attempt = 0
        while True:
            cursor = self._pending if self._pending is not None else await self._saved_cursor()
            self.resumed_from = cursor
            try:
                if self.handle_batch is not None:
                    await self._consume_batches(cursor)
                async for item_cursor, item in self.open_stream(cursor):
                    self.stats.connected = True
                    self._attempt = 0
                    await self._handle_one(item_cursor, item)
                    reraise_if_cancelling()  # a client library may have swallowed the cancel (common.cancel)
                raise ConnectionError("upstream stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any upstream failure means reconnect
                reraise_if_cancelling(exc)
                self.stats.connected = False
                self.stats.reconnects += 1
                delay = self.backoff.delay(self._attempt, self.rng.random())
                self._attempt += 1
                log.warning("consumer reconnecting", extra={"consumer": self.name, "error": repr(exc)[:300],
                                                            "delay_s": round(delay, 3)})
                await asyncio.sleep(delay)

    async def _consume_batches(self, cursor: str) -> None:
        """Read ahead on a second task (bounded in count and, with ``item_bytes``, in bytes) and hand over whatever
        has arrived as one batch."""
        queue: deque[tuple[str, T, int]] = deque()
        ready = asyncio.Event()
        room = asyncio.Event()
        room.set()
        limit, byte_limit, sizer = 4 * self.max_batch, 4 * self.max_batch_bytes, self.item_bytes
        queued = 0  # bytes read ahead

        async def read() -> None:
            nonlocal queued
            try:
                async for item_cursor, item in self.open_stream(cursor):
                    self.stats.connected = True
                    self._attempt = 0
                    size = sizer(item) if sizer is not None else 0
                    queue.append((item_cursor, item, size))
                    queued += size
                    ready.set()
                    if len(queue) >= limit or queued >= byte_limit:
                        room.clear()
                        await room.wait()
                raise ConnectionError("upstream stream ended")
            finally:
                ready.set()

        reader = asyncio.create_task(read(), name=f"consumer-reader:{self.name}")
        try:
            while True:
                if not queue:
                    if reader.done():
                        # items read before the failure were handled; resume after the last of them
                        raise reader.exception() or ConnectionError("upstream stream ended")
                    ready.clear()
                    await ready.wait()
                    continue
                batch: list[tuple[str, T]] = []
                taken = 0
                while queue and len(batch) < self.max_batch and (
                        not batch or taken + queue[0][2] <= self.max_batch_bytes):
                    item_cursor, item, size = queue.popleft()
                    batch.append((item_cursor, item))
                    taken += size
                queued -= taken
                if not room.is_set():
                    room.set()
                await self._handle_batch(batch)
                reraise_if_cancelling()
        finally:
            reader.cancel()
            await asyncio.wait({reader}, timeout=1.0)

    async def _handle_batch(self, batch: list[tuple[str, T]]) -> None:
        assert self.handle_batch is not None
        try:
            await self.handle_batch([item for _, item in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: retry the items one by one
            reraise_if_cancelling(exc)
            self.stats.batch_fallbacks += 1
            log.warning("batch failed; handling its items one by one",
                        extra={"consumer": self.name, "items": len(batch), "error": repr(exc)[:300]})
            for item_cursor, item in batch:
                reraise_if_cancelling()  # a client library may have swallowed the cancel (common.cancel)
                await self._handle_one(item_cursor, item)
            return
        self.stats.batches += 1
        self.stats.handled += len(batch)
        self.stats.last_cursor = self._pending = batch[-1][0]
        self._dirty.set()

    async def _saved_cursor(self) -> str:
        while True:
            try:
                register = getattr(self.cursors, "register", None)
                if self.stream and register is not None:  # before the cursor is read: the log is kept for it
                    await register(self.name, self.stream, wall_ms())
                saved = await self.cursors.get(self.name)
                return saved if saved is not None else self.start
            except Exception as exc:  # noqa: BLE001 - Redis may be briefly unavailable
                reraise_if_cancelling(exc)
                log.warning("cursor read failed", extra={"consumer": self.name, "error": repr(exc)[:300]})
                await asyncio.sleep(0.5)

    async def _handle_one(self, cursor: str, item: T) -> None:
        attempt = outage = 0
        while True:
            try:
                await self.handle(item)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_if_cancelling(exc)
                self.stats.handler_errors += 1
                if self.transient(exc):
                    self.stats.transient_errors += 1
                    if not outage & (outage - 1):  # the 1st, 2nd, 4th, 8th… retry of one outage
                        log.warning("storage unavailable; retrying the item", extra={
                            "consumer": self.name, "cursor": cursor, "retry": outage + 1,
                            "error": repr(exc)[:300]})
                    await asyncio.sleep(self.backoff.delay(min(outage, MAX_TRANSIENT_BACKOFF_ATTEMPT),
                                                           self.rng.random()))
                    outage += 1
                    continue
                attempt += 1
                log.exception("handler failed", extra={"consumer": self.name, "cursor": cursor,
                                                       "attempt": attempt})
                if attempt >= self.max_handler_attempts:
                    self.stats.dead_lettered += 1
                    if self.dead_letter is not None:
                        await self.dead_letter(cursor, item, exc)
                    # saved before going on: handled again after a crash, it would be set aside twice, or
                    # handled while what its dead letter did (its reservations released) stands
                    self._pending = cursor
                    await self._save_pending()
                    break
                await asyncio.sleep(self.backoff.delay(attempt - 1, self.rng.random()))
        self.stats.handled += 1
        self.stats.last_cursor = cursor
        self._pending = cursor
        self._dirty.set()

    async def _saver(self) -> None:
        """Save the newest handled cursor, one write at a time: a burst of items costs a few writes, and
        the next item never waits for Redis (a crash can redeliver the items handled since the last save;
        downstream idempotency keys make that harmless)."""
        while True:
            reraise_if_cancelling()
            await self._dirty.wait()
            if self.save_interval_s:
                await asyncio.sleep(self.save_interval_s)
            self._dirty.clear()
            try:
                await self._save_pending()
            except RuntimeError:
                reraise_if_cancelling()
                log.exception("cursor not saved; retrying", extra={"consumer": self.name})
                self._dirty.set()

    async def _save_pending(self) -> None:
        """Save the newest handled cursor unless saved already (one save at a time: never an older one last)."""
        async with self._save_lock:
            cursor = self._pending
            if cursor is None or cursor == self._saved:
                return
            await self._save(cursor)
            self._saved = cursor

    async def _save(self, cursor: str) -> None:
        for attempt in range(1000):
            try:
                await self.cursors.set(self.name, cursor)
                return
            except Exception as exc:  # noqa: BLE001 - must not advance without saving
                reraise_if_cancelling(exc)
                log.warning("cursor save failed", extra={"consumer": self.name, "error": repr(exc)[:300]})
                await asyncio.sleep(self.backoff.delay(min(attempt, 6), self.rng.random()))
        raise RuntimeError(f"consumer {self.name}: cannot save cursor")


_CONSUMERS: weakref.WeakSet[ResumableConsumer[Any]] = weakref.WeakSet()


def _observe(value: Callable[[ResumableConsumer[Any]], float | None]
             ) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for consumer in list(_CONSUMERS):
            v = value(consumer)
            if v is not None:
                yield Observation(v, {"consumer": consumer.name, "stream": stream_label(consumer.stream)})
    return observe


_meter = metrics.get_meter("tradingtools.consumers")
_meter.create_observable_gauge(
    "consumer.position_time", unit="s", description="Time in the id of the last item handled (or resumed from)",
    callbacks=[_observe(lambda c: cursor_seconds(c.stats.last_cursor or c.resumed_from))])
_meter.create_observable_counter("consumer.handled", description="Items handled",
                                 callbacks=[_observe(lambda c: c.stats.handled)])
_meter.create_observable_counter("consumer.reconnects", description="Upstream streams reopened",
                                 callbacks=[_observe(lambda c: c.stats.reconnects)])
_meter.create_observable_counter("consumer.dead_letters", description="Items set aside after failing",
                                 callbacks=[_observe(lambda c: c.stats.dead_lettered)])
_meter.create_observable_gauge("consumer.connected", description="1 while the upstream stream is open",
                               callbacks=[_observe(lambda c: 1.0 if c.stats.connected else 0.0)])
