"""Durable event logs between layers: Redis Streams behind gRPC server streams.

Every event a layer emits is appended to a Redis Stream (field ``p`` = serialized protobuf) before
it is streamed; the gRPC stream serves the log from a cursor (the stream entry id). Readers in
another process may also read a log straight from Redis (:mod:`common.logread`); either way a
:class:`common.consumer.ResumableConsumer` handles each item, then saves its cursor, so a restart
of either side resumes where it left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from common.alerts import AlertKind, Severity, raise_alert
from common.grpcclient import MAX_MESSAGE_BYTES
from common.livefeed import LiveFeed

log = logging.getLogger(__name__)
_GAPS = metrics.get_meter("tradingtools.streams").create_counter(
    "stream.gaps", description="Readers that resumed behind a log's trimmed start (entries lost to them), by log")
_SET_ASIDE = metrics.get_meter("tradingtools.streams").create_counter(
    "stream.dead_letters", description="Log entries set aside because no reader could be served them (too large for a "
                                       "gRPC message, or unreadable), by log")

# The most a served entry may weigh: what is left of a gRPC message (common.grpcclient.MAX_MESSAGE_BYTES) after
# the response's own fields. A heavier entry would fail its reader's stream at the same place on every reconnect.
MAX_ENTRY_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
# How long a log remembers that one of its entries was set aside: longer than a reader's cursor holds the log at
# the default trimming (common.logtrim's max_pin_s, a day), so a restarted writer serving it again does not set it
# aside again (tuned longer than this, an entry older than this may be set aside a second time).
SET_ASIDE_MEMORY_S = 7 * 86_400

T = TypeVar("T")
R = TypeVar("R")

LEADER_TRADES = "tt:stream:leader_trades"
PRICE_TICKS = "tt:stream:price_ticks"
MARKET_RESOLUTIONS = "tt:stream:market_resolutions"
ROUTED_TRADES = "tt:stream:routed_trades"
ORDER_EVENTS = "tt:stream:order_events"
TRIGGER_EVENTS = "tt:stream:trigger_events"
REDEMPTION_EVENTS = "tt:stream:redemption_events"
MARKET_RESOLUTIONS = "tt:stream:market_resolutions"

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
                 block_ms: int = 1000, live: LiveFeed | None = None,
                 on_set_aside: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        self.redis = redis
        self.name = name
        self.on_set_aside = on_set_aside  # what else a set-aside entry needs (its reservations released, say)
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.live = live
        self.malformed = 0  # entries serve_log skipped
        self.set_aside = 0  # entries no reader can be served, recorded as dead letters (see dead_letter)
        _SET_ASIDE.add(0, {"log": name})  # exported from the start: an alerting rule reads it
        self._dead: set[str] = set()
        self.gaps = 0  # readers that resumed behind the trimmed start (see check_gap)
        self._append_lock = asyncio.Lock()

    async def prime(self) -> None:
        """Let memory cover the log from its current end (no-op without ``live``)."""
        if self.live is not None:
            self.live.prime(await self.last_cursor())

    @property
    def append_lock(self) -> asyncio.Lock:
        """Held by every append of this process to the log (here and :func:`common.fastredis.append_events`):
        the live feed must be handed the entries in log order."""
        return self._append_lock

    def invalidate(self) -> None:
        """The writer lost track of what it appended: readers read Redis until the next :meth:`prime`."""
        if self.live is not None:
            self.live.invalidate()

    def published(self, cursor: str, payload: bytes) -> None:
        """Record an entry appended by a script of this process (in log order)."""
        _ENDS[self.name] = cursor
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
            _ENDS[self.name] = ids[-1]
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

    async def entries_from(self, cursor: str, count: int) -> list[bytes]:
        """The payloads of up to ``count`` entries from ``cursor`` on (``cursor``'s own first), in log order; none
        when the log no longer has ``cursor``'s entry (trimmed, or lost by Redis): the entries after it are others'."""
        rows: Any = await self.redis.xrange(self.name, min=cursor, max="+", count=count)
        if not rows or _entry_id(_cursor_of(rows[0][0])) != _entry_id(cursor):
            return []
        return [fields.get(b"p", b"") for _id, fields in rows]

    @property
    def dead_letter_key(self) -> str:
        """The Redis Stream where this log's entries that could not be served are kept for an operator."""
        return f"tt:dlq:{self.name}"

    async def dead_letter(self, cursor: str, payload: bytes, reason: str, *, follow_up: bool = True) -> None:
        """Set aside an entry no reader can be served (logged as an error, counted, kept under
        :attr:`dead_letter_key` with its payload, then ``on_set_aside`` unless not ``follow_up``); readers go on
        past it. Recorded once, whatever restarts of this process serve it again (marked in Redis once all that is
        done: a crash in between does it twice rather than never)."""
        if cursor in self._dead:
            return
        self._dead.add(cursor)
        seen = f"tt:dlq-seen:{self.name}:{cursor}"
        try:
            if await self.redis.exists(seen):
                return
        except Exception:  # noqa: BLE001 - recorded (again, at worst)
            log.warning("dead letter not looked up", extra={"log": self.name, "cursor": cursor})
        self.set_aside += 1
        _SET_ASIDE.add(1, {"log": self.name})
        log.error("log entry set aside as a dead letter; readers go on past it",
                  extra={"log": self.name, "cursor": cursor, "bytes": len(payload), "reason": reason})
        raise_alert(AlertKind.DEAD_LETTERED, f"dead_letter:{self.dead_letter_key}",
                    f"{self.name}: an entry no reader can be served was set aside; readers go on past it",
                    dedupe_id=f"dead_letter:{self.dead_letter_key}:{cursor}", severity=Severity.CRITICAL,
                    cursor=cursor, bytes=len(payload), reason=reason[:300])
        try:
            await self.redis.xadd(self.dead_letter_key, {b"cursor": cursor.encode(), b"error": reason.encode(),
                                                         b"p": payload}, maxlen=100_000, approximate=True)
        except Exception:
            log.exception("dead letter not recorded", extra={"log": self.name, "cursor": cursor})
        if self.on_set_aside is not None and follow_up:
            try:
                await self.on_set_aside(payload)
            except Exception:
                log.exception("set-aside entry's follow-up failed", extra={"log": self.name, "cursor": cursor})
        try:
            await self.redis.set(seen, b"1", ex=SET_ASIDE_MEMORY_S)
        except Exception:  # noqa: BLE001 - a restart may record it again
            log.warning("dead letter not marked recorded", extra={"log": self.name, "cursor": cursor})

    async def check_gap(self, cursor: str) -> str | None:
        """For a reader resuming after ``cursor``: the oldest entry kept when it is newer than ``cursor``, so
        that what came between was trimmed (MAXLEN) before this reader saw it; logged as an error and
        counted in :attr:`gaps` (None: nothing lost). The reader goes on from the oldest entry kept.

        Trimming takes the oldest entries, so a cursor older than the log's start means the reader was at
        least the log's length behind: everything after it up to the start is gone, unless the cursor was
        the very last entry trimmed (which no check on Redis 6 can tell apart)."""
        if _entry_id(cursor) <= (0, 0):
            return None  # a reader from the beginning: it reads everything still kept
        first: Any = await self.redis.xrange(self.name, min="-", max="+", count=1)
        if not first:
            return None
        oldest = first[0][0].decode() if isinstance(first[0][0], bytes) else str(first[0][0])
        if _entry_id(oldest) <= _entry_id(cursor):
            return None
        self.gaps += 1
        _GAPS.add(1, {"log": self.name})
        log.error("reader resumed behind the log's trimmed start: entries between were lost to it",
                  extra={"log": self.name, "cursor": cursor, "oldest_kept": oldest, "maxlen": self.maxlen})
        return oldest

    async def resume(self, after: str) -> str:
        """:meth:`resolve` ``after`` for a reader starting now; one resuming from a saved cursor is checked
        for a gap (:meth:`check_gap`) first."""
        cursor = await self.resolve(after)
        if after not in (START_NEW, START_OLDEST):
            await self.check_gap(cursor)
        return cursor

    async def resolve(self, after: str) -> str:
        """Turn START_NEW / START_OLDEST into a concrete cursor."""
        if after == START_NEW:
            return await self.last_cursor()
        if after == START_OLDEST:
            return "0-0"
        return after

    async def tail(self, after: str) -> AsyncIterator[tuple[str, bytes]]:
        """Every entry after ``after``, forever (used by the gRPC stream servicers)."""
        async for batch in self.tail_batches(after):
            for item in batch:
                yield item

    async def tail_batches(self, after: str) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Every entry after ``after``, forever, in the (never empty) batches that were ready together."""
        cursor = await self.resume(after)
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
            if batch:
                cursor = batch[-1][0]
                yield batch


_ENDS: dict[str, str] = {}  # log → the newest entry this process appended (its end, as this process knows it)


def note_appended(name: str, cursor: str) -> None:
    """Record an entry appended to log ``name`` by other means than a :class:`DurableLog` (a script)."""
    _ENDS[name] = cursor


def stream_label(name: str) -> str:
    """A log's metric label: ``tt:stream:leader_trades`` → ``leader_trades``."""
    return name.removeprefix("tt:stream:")


def cursor_seconds(cursor: str) -> float | None:
    """The time (Unix seconds) in a stream entry id, None for anything else."""
    ms = _entry_id(cursor)[0]
    return ms / 1000 if ms >= 0 else None


def _observe_ends(_options: CallbackOptions) -> Iterable[Observation]:
    for name, cursor in list(_ENDS.items()):
        at = cursor_seconds(cursor)
        if at is not None:
            yield Observation(at, {"stream": stream_label(name)})


metrics.get_meter("tradingtools.streams").create_observable_gauge(
    "stream.last_entry_time", callbacks=[_observe_ends], unit="s",
    description="Time in the id of the newest entry this process appended to each log (its end); a consumer's "
                "lag is this minus its consumer.position_time")


def _cursor_of(raw: Any) -> str:
    """A stream entry id as Redis returned it, as a cursor."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _entry_id(cursor: str) -> tuple[int, int]:
    """A stream entry id ``ms-seq`` (or ``ms``) as a comparable pair; anything else sorts first."""
    ms, _, seq = cursor.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (-1, -1)


def _covered_cursor(live: LiveFeed) -> str:
    """Where memory coverage starts (a reader Redis has nothing more for continues from there)."""
    covered = live.covered_after
    assert covered is not None
    return f"{covered[0]}-{covered[1]}"


def _built(log_: DurableLog, build: Callable[[str, bytes], T], cursor: str, payload: bytes) -> T | BaseException:
    """``build(cursor, payload)``, or what it raised (counted in ``log_.malformed``; the caller sets the entry aside
    with :func:`_set_aside_malformed`: whatever it held, a routed part's copies, is never served, and someone must
    know). Not a coroutine: it runs for every entry served."""
    try:
        return build(cursor, payload)
    except Exception as exc:  # noqa: BLE001 - whatever the payload's parser raises
        log_.malformed += 1
        return exc


async def _set_aside_malformed(log_: DurableLog, cursor: str, payload: bytes, exc: BaseException) -> None:
    await log_.dead_letter(cursor, payload, f"MALFORMED: {exc!r}"[:1000], follow_up=False)


async def _servable(log_: DurableLog, cursor: str, payload: bytes) -> bool:
    """False (and the entry dead-lettered) when ``payload`` is too big for any gRPC message to carry."""
    if len(payload) <= MAX_ENTRY_BYTES:
        return True
    await log_.dead_letter(cursor, payload, f"ENTRY_TOO_LARGE: {len(payload)} bytes, at most {MAX_ENTRY_BYTES}")
    return False


async def serve_log(log_: DurableLog, after_cursor: str, build: Callable[[str, bytes], T]) -> AsyncIterator[T]:
    """Adapt a log tail to a gRPC server-streaming handler: ``build(cursor, payload)`` → response.

    An entry ``build`` cannot turn into a response (a payload that does not parse; counted in ``log_.malformed``)
    or too big for a gRPC message is set aside as a dead letter (:meth:`DurableLog.dead_letter`): either would
    otherwise end every reader's stream at the same place."""
    async for cursor, payload in log_.tail(after_cursor):
        if not await _servable(log_, cursor, payload):
            continue
        item = _built(log_, build, cursor, payload)
        if isinstance(item, BaseException):
            await _set_aside_malformed(log_, cursor, payload, item)
        else:
            yield item


async def serve_log_batches(log_: DurableLog, after_cursor: str, build: Callable[[str, bytes], T],
                            pack: Callable[[list[T]], R], max_items: int) -> AsyncIterator[R]:
    """Like :func:`serve_log`, but one response per batch of entries that were ready together
    (``pack`` of at most ``max_items`` built entries, and at most :data:`MAX_ENTRY_BYTES` of payload): a busy
    log costs a gRPC message per batch, not per entry, and an entry that comes alone still leaves at once."""
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    async for batch in log_.tail_batches(after_cursor):
        items: list[T] = []
        size = 0
        for cursor, payload in batch:
            if not await _servable(log_, cursor, payload):
                continue
            item = _built(log_, build, cursor, payload)
            if isinstance(item, BaseException):
                await _set_aside_malformed(log_, cursor, payload, item)
                continue
            if items and size + len(payload) > MAX_ENTRY_BYTES:
                yield pack(items)
                items, size = [], 0
            items.append(item)
            size += len(payload) + 64  # with the cursor and framing of its entry
            if len(items) >= max_items:
                yield pack(items)
                items, size = [], 0
        if items:
            yield pack(items)
