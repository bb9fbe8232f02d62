"""Durable event logs between layers: Redis Streams behind gRPC server streams, resumable consumers.

Every event a layer emits is appended to a Redis Stream (field ``p`` = serialized protobuf) before
it is streamed; the gRPC stream serves the log from a cursor (the stream entry id). A consumer
handles each item, then saves its cursor in Redis, so a restart of either side resumes where it
left off: nothing is lost, and an item is redelivered only if the consumer died between handling
it and saving the cursor (downstream idempotency keys make that harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from common.livefeed import LiveFeed
from common.resp import RespConnection
from common.retry import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

LEADER_TRADES = "tt:stream:leader_trades"
PRICE_TICKS = "tt:stream:price_ticks"
ROUTED_TRADES = "tt:stream:routed_trades"
ORDER_EVENTS = "tt:stream:order_events"
TRIGGER_EVENTS = "tt:stream:trigger_events"

START_NEW = ""  # only events appended after the reader starts
START_OLDEST = "0"  # everything still kept in the log


def create_stream_redis(url: str, *, block_s: float = 5.0) -> aioredis.Redis:
    """A bytes-mode Redis client whose socket timeout outlasts a blocking XREAD."""
    return aioredis.from_url(url, decode_responses=False, socket_timeout=block_s + 5.0,
                             socket_connect_timeout=2.0, health_check_interval=10)


class DurableLog:
    """One Redis Stream of serialized protobuf events.

    With ``live`` (a :class:`~common.livefeed.LiveFeed`), this process is the log's only writer: every
    append is also kept in memory, and :meth:`tail` serves from memory once a reader has caught up.
    Appends made outside :meth:`append` / :meth:`append_many` (Lua scripts) must be handed to
    :meth:`published` in log order, and :meth:`prime` must run once at start-up.
    """

    def __init__(self, redis: aioredis.Redis, name: str, *, maxlen: int = 1_000_000,
                 block_ms: int = 1000, live: LiveFeed | None = None) -> None:
        self.redis = redis
        self.name = name
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.live = live
        self.malformed = 0  # entries serve_log skipped
        self._append_lock = asyncio.Lock()

    async def prime(self) -> None:
        """Let memory cover the log from its current end (no-op without ``live``)."""
        if self.live is not None:
            self.live.prime(await self.last_cursor())

    def invalidate(self) -> None:
        """The writer lost track of what it appended: readers read Redis until the next :meth:`prime`."""
        if self.live is not None:
            self.live.invalidate()

    def published(self, cursor: str, payload: bytes) -> None:
        """Record an entry appended by a script of this process (in log order)."""
        if self.live is not None:
            self.live.publish(cursor, payload)

    async def append(self, payload: bytes) -> str:
        """Append one event; returns its cursor once Redis has it."""
        return (await self.append_many([payload]))[0]

    async def append_many(self, payloads: list[bytes]) -> list[str]:
        """Append several events in one round trip; returns their cursors in order."""
        if not payloads:
            return []
        async with self._append_lock:  # concurrent appenders would publish out of order
            pipe = self.redis.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(self.name, {b"p": payload}, maxlen=self.maxlen, approximate=True)
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in await pipe.execute()]
            if self.live is not None:
                for cursor, payload in zip(ids, payloads, strict=True):
                    self.live.publish(cursor, payload)
        return ids

    async def last_cursor(self) -> str:
        """Cursor of the newest entry ("0-0" when the log is empty)."""
        last = await self.redis.xrevrange(self.name, count=1)
        if not last:
            return "0-0"
        entry_id = last[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def read(self, after: str, *, count: int = 512, block_ms: int | None = None) -> list[tuple[str, bytes]]:
        """Entries strictly after ``after`` (a concrete cursor), waiting up to ``block_ms`` for the first."""
        block = self.block_ms if block_ms is None else block_ms
        result: Any = await self.redis.xread({self.name: after}, count=count, block=block or None)
        out: list[tuple[str, bytes]] = []
        for _stream, entries in result or []:
            for entry_id, fields in entries:
                cursor = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                out.append((cursor, fields.get(b"p", b"")))
        return out

    async def entry(self, cursor: str) -> bytes | None:
        """The payload of the entry at ``cursor`` (None when the log no longer has it)."""
        rows: Any = await self.redis.xrange(self.name, min=cursor, max=cursor, count=1)
        return rows[0][1].get(b"p", b"") if rows else None

    async def resolve(self, after: str) -> str:
        """Turn START_NEW / START_OLDEST into a concrete cursor."""
        if after == START_NEW:
            return await self.last_cursor()
        if after == START_OLDEST:
            return "0-0"
        return after

    async def tail(self, after: str) -> AsyncIterator[tuple[str, bytes]]:
        """Every entry after ``after``, forever (used by the gRPC stream servicers)."""
        cursor = await self.resolve(after)
        live = self.live
        while True:
            if live is not None and live.covers(cursor):
                changed = live.changed()
                batch = live.after(cursor)
                if not batch:
                    # asyncio.timeout rather than wait_for: no task per wait, the publish wakes this one directly
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.block_ms / 1000 or 1.0):
                            await changed.wait()
                    continue
            else:
                # catching up from Redis; once it has nothing newer, memory holds the rest
                primed = live is not None and live.covered_after is not None
                batch = await self.read(cursor, block_ms=0 if primed else self.block_ms)
                if not batch and live is not None and live.covered_after is not None:
                    cursor = _covered_cursor(live)
                    continue
            for cursor_, payload in batch:
                cursor = cursor_
                yield cursor_, payload


def _covered_cursor(live: LiveFeed) -> str:
    """Where memory coverage starts (a reader Redis has nothing more for continues from there)."""
    covered = live.covered_after
    assert covered is not None
    return f"{covered[0]}-{covered[1]}"


async def serve_log(log_: DurableLog, after_cursor: str, build: Callable[[str, bytes], T]) -> AsyncIterator[T]:
    """Adapt a log tail to a gRPC server-streaming handler: ``build(cursor, payload)`` → response.

    An entry ``build`` cannot turn into a response (a payload that does not parse) is logged, counted
    in ``log_.malformed`` and skipped: it would otherwise end every reader's stream at the same place."""
    async for cursor, payload in log_.tail(after_cursor):
        try:
            item = build(cursor, payload)
        except Exception as exc:  # noqa: BLE001 - whatever the payload's parser raises
            log_.malformed += 1
            log.warning("malformed log entry skipped", extra={"log": log_.name, "cursor": cursor,
                                                               "error": repr(exc)[:300]})
            continue
        yield item


def entry_payload(fields: list[Any]) -> bytes | None:
    """The ``p`` field of an XREAD entry's ``[field, value, ...]`` (None when it has none)."""
    if fields and fields[0] == b"p":
        return bytes(fields[1])
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"p":
            return bytes(fields[i + 1])
    return None


def entry_cursor(raw: Any) -> str:
    """An XREAD entry id as a cursor string."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def read_raw_entries(log_: DurableLog, *, batch: int = 1024, block_ms: int = 1000,
                     min_interval_s: float = 0.0) -> Callable[[str], AsyncIterator[list[Any]]]:
    """A durable log as ``open(after_cursor)`` yielding raw XREAD entries ``[[id, [field, value, ...]], ...]``,
    one list per read (every entry appended since the previous read, up to ``batch``), for readers in
    another process that take a log's entries straight from Redis rather than over its gRPC stream.

    The reads go over a dedicated :class:`common.resp.RespConnection` (~30 µs per round trip where
    redis-py costs ~100 µs of CPU); connections that are not plain TCP (TLS, unix socket) read
    through redis-py. ``min_interval_s`` > 0: a read that returned less than a full batch is followed
    by the next one no sooner than that long after it started, so under load entries gather into
    fewer, larger batches (a lone entry after a quiet spell is read at once)."""
    pool = log_.redis.connection_pool
    kwargs = pool.connection_kwargs
    plain_tcp = pool.connection_class is Connection and "host" in kwargs
    name = log_.name.encode()
    count, block = str(batch).encode(), str(block_ms).encode()
    reply_timeout_s = block_ms / 1000 + 5.0

    async def pause(started: float, got: int) -> None:
        if min_interval_s > 0 and got < batch:
            wait_s = started + min_interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)

    async def open_entries(after: str) -> AsyncIterator[list[Any]]:
        cursor = await log_.resolve(after)
        if not plain_tcp:
            while True:
                started = time.monotonic()
                items = await log_.read(cursor, count=batch, block_ms=block_ms)
                if items:
                    cursor = items[-1][0]
                    yield [[c, [b"p", p]] for c, p in items]
                    await pause(started, len(items))
        conn = await RespConnection.open_tcp(kwargs["host"], int(kwargs.get("port") or 6379),
                                             username=kwargs.get("username"), password=kwargs.get("password"),
                                             db=int(kwargs.get("db") or 0), connect_timeout_s=5.0)
        try:
            while True:
                started = time.monotonic()
                reply = await conn.call(b"XREAD", b"COUNT", count, b"BLOCK", block, b"STREAMS", name,
                                        cursor.encode(), timeout_s=reply_timeout_s)
                if not reply:  # nil: nothing new within block_ms
                    continue
                entries = reply[0][1]
                if entries:
                    cursor = entry_cursor(entries[-1][0])
                    yield entries
                    await pause(started, len(entries))
        finally:
            conn.close()

    return open_entries


def read_log_items(log_: DurableLog, parse: Callable[[bytes], T], *, batch: int = 256, block_ms: int = 1000,
                   min_interval_s: float = 0.0) -> OpenStream[T]:
    """A durable log read straight from Redis as ``open_stream(after_cursor)`` of ``(cursor, item)``: the
    items and cursors its gRPC stream serves. An entry without a payload or whose payload does not
    ``parse`` is logged, counted in ``log_.malformed`` and skipped, as :func:`serve_log` does."""
    open_entries = read_raw_entries(log_, batch=batch, block_ms=block_ms, min_interval_s=min_interval_s)

    async def open_stream(after: str) -> AsyncIterator[tuple[str, T]]:
        async for entries in open_entries(after):
            for raw_id, fields in entries:
                cursor = entry_cursor(raw_id)
                payload = entry_payload(fields)
                try:
                    if payload is None:
                        raise ValueError("no 'p' field")
                    item = parse(payload)
                except Exception as exc:  # noqa: BLE001 - whatever the payload's parser raises
                    log_.malformed += 1
                    log.warning("malformed log entry skipped", extra={"log": log_.name, "cursor": cursor,
                                                                       "error": repr(exc)[:300]})
                    continue
                yield cursor, item

    return open_stream


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


@dataclass
class ConsumerStats:
    """Counters of a resumable consumer (also exported as metrics by the services)."""

    handled: int = 0
    reconnects: int = 0
    handler_errors: int = 0
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
    ``dead_letter`` and is moved past, so one poison event cannot stall the pipeline. The cursor is
    saved behind the handling, at most once per ``save_interval_s``: a crash redelivers at most the
    items of that interval (downstream idempotency keys make that harmless).

    With ``handle_batch``, the items that arrived while the previous batch was being handled go
    together, in stream order, up to ``max_batch`` (a lone item is handed over at once, as a list of
    one). A batch that raises is handled again item by item through ``handle``, with the retries and
    dead-lettering above, so ``handle_batch`` must leave things such that re-handling its items one
    by one is correct (it must anyway: a crash redelivers them).
    """

    def __init__(self, name: str, open_stream: OpenStream[T], handle: Callable[[T], Awaitable[None]],
                 cursors: CursorStore, *, start: str = START_NEW,
                 dead_letter: Callable[[str, T, BaseException], Awaitable[None]] | None = None,
                 backoff: Backoff = DEFAULT_BACKOFF, max_handler_attempts: int = 5,
                 rng: random.Random | None = None, save_interval_s: float = 0.02,
                 handle_batch: Callable[[list[T]], Awaitable[None]] | None = None,
                 max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.name = name
        self.open_stream = open_stream
        self.handle = handle
        self.handle_batch = handle_batch
        self.max_batch = max_batch
        self.cursors = cursors
        self.start = start
        self.dead_letter = dead_letter
        self.backoff = backoff
        self.max_handler_attempts = max_handler_attempts
        self.rng = rng or random.Random()
        self.save_interval_s = save_interval_s
        self.stats = ConsumerStats()
        self._attempt = 0
        self._pending: str | None = None
        self._saved: str | None = None
        self._dirty = asyncio.Event()

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
            try:
                if self.handle_batch is not None:
                    await self._consume_batches(cursor)
                async for item_cursor, item in self.open_stream(cursor):
                    self.stats.connected = True
                    self._attempt = 0
                    await self._handle_one(item_cursor, item)
                raise ConnectionError("upstream stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any upstream failure means reconnect
                _raise_if_cancelling(exc)
                self.stats.connected = False
                self.stats.reconnects += 1
                delay = self.backoff.delay(self._attempt, self.rng.random())
                self._attempt += 1
                log.warning("consumer reconnecting", extra={"consumer": self.name, "error": repr(exc)[:300],
                                                            "delay_s": round(delay, 3)})
                await asyncio.sleep(delay)

    async def _consume_batches(self, cursor: str) -> None:
        """Read ahead on a second task (bounded) and hand over whatever has arrived as one batch."""
        queue: deque[tuple[str, T]] = deque()
        ready = asyncio.Event()
        room = asyncio.Event()
        room.set()
        limit = 4 * self.max_batch

        async def read() -> None:
            try:
                async for item in self.open_stream(cursor):
                    self.stats.connected = True
                    self._attempt = 0
                    queue.append(item)
                    ready.set()
                    if len(queue) >= limit:
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
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                if not room.is_set():
                    room.set()
                await self._handle_batch(batch)
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
            _raise_if_cancelling(exc)
            self.stats.batch_fallbacks += 1
            log.warning("batch failed; handling its items one by one",
                        extra={"consumer": self.name, "items": len(batch), "error": repr(exc)[:300]})
            for item_cursor, item in batch:
                await self._handle_one(item_cursor, item)
            return
        self.stats.batches += 1
        self.stats.handled += len(batch)
        self.stats.last_cursor = self._pending = batch[-1][0]
        self._dirty.set()

    async def _saved_cursor(self) -> str:
        while True:
            try:
                saved = await self.cursors.get(self.name)
                return saved if saved is not None else self.start
            except Exception as exc:  # noqa: BLE001 - Redis may be briefly unavailable
                _raise_if_cancelling(exc)
                log.warning("cursor read failed", extra={"consumer": self.name, "error": repr(exc)[:300]})
                await asyncio.sleep(0.5)

    async def _handle_one(self, cursor: str, item: T) -> None:
        for attempt in range(self.max_handler_attempts):
            try:
                await self.handle(item)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _raise_if_cancelling(exc)
                self.stats.handler_errors += 1
                log.exception("handler failed", extra={"consumer": self.name, "cursor": cursor,
                                                       "attempt": attempt + 1})
                if attempt + 1 == self.max_handler_attempts:
                    self.stats.dead_lettered += 1
                    if self.dead_letter is not None:
                        await self.dead_letter(cursor, item, exc)
                    break
                await asyncio.sleep(self.backoff.delay(attempt, self.rng.random()))
        self.stats.handled += 1
        self.stats.last_cursor = cursor
        self._pending = cursor
        self._dirty.set()

    async def _saver(self) -> None:
        """Save the newest handled cursor, one write at a time: a burst of items costs a few writes, and
        the next item never waits for Redis (a crash can redeliver the items handled since the last save;
        downstream idempotency keys make that harmless)."""
        while True:
            _raise_if_cancelling()
            await self._dirty.wait()
            if self.save_interval_s:
                await asyncio.sleep(self.save_interval_s)
            self._dirty.clear()
            cursor = self._pending
            if cursor is None or cursor == self._saved:
                continue
            try:
                await self._save(cursor)
            except RuntimeError:
                log.exception("cursor not saved; retrying", extra={"consumer": self.name})
                self._dirty.set()
                continue
            self._saved = cursor

    async def _save(self, cursor: str) -> None:
        for attempt in range(1000):
            try:
                await self.cursors.set(self.name, cursor)
                return
            except Exception as exc:  # noqa: BLE001 - must not advance without saving
                _raise_if_cancelling(exc)
                log.warning("cursor save failed", extra={"consumer": self.name, "error": repr(exc)[:300]})
                await asyncio.sleep(self.backoff.delay(min(attempt, 6), self.rng.random()))
        raise RuntimeError(f"consumer {self.name}: cannot save cursor")


def _raise_if_cancelling(exc: BaseException | None = None) -> None:
    """Raise when this task was asked to stop: a client library can turn a cancellation into another
    exception, or swallow it mid-command (redis-py does both)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class DeadLetters:
    """Dead-lettered items in a Redis Stream ``tt:dlq:<consumer>`` for an operator to inspect."""

    def __init__(self, redis: aioredis.Redis, consumer: str, encode: Callable[[Any], bytes]) -> None:
        self.redis = redis
        self.key = f"tt:dlq:{consumer}"
        self.encode = encode

    async def __call__(self, cursor: str, item: Any, error: BaseException) -> None:
        """Record one dead-lettered item."""
        await self.redis.xadd(self.key, {b"cursor": cursor.encode(), b"error": repr(error)[:1000].encode(),
                                         b"p": self.encode(item)}, maxlen=100_000, approximate=True)
