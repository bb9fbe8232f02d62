"""A log kept only as long as its readers need it.

A Redis Stream log is capped by length (``MAXLEN``), but its entries differ in size by three orders of magnitude
(a RoutedTrade of 10 orders is ~6 KB; one of 1,000 is split into parts of up to the message limit), so a length
cap alone bounds nothing in bytes. Readers that resume from a saved cursor register in ``tt:readers:<log>``
(their consumer name → the time they last started, ms). The log's writer runs a :class:`LogTrimmer`: every
``interval_s`` it trims the log (``XTRIM MINID ~``) to the oldest cursor of its registered readers, never past
``now - keep_s`` (so a restart of the router still finds its last 10 minutes of appends, and an operator can read
back a while). A log without registered readers is left to its length cap.

A registered reader that has not saved a cursor yet holds the whole log (it may start from the oldest entry).
A reader whose cursor (or, without one, whose registration) is older than ``max_pin_s`` no longer holds the
log: a consumer that was renamed or removed must not keep it growing until Redis runs out of memory. It is
counted at every round and logged as an error once per process (a reader of a log that stays empty never saves
a cursor either), and the length cap still applies.

:func:`trim_floor` is the pure decision; the trimmer does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.cancel import reraise_if_cancelling
from common.tuning import tune

log = logging.getLogger(__name__)

READERS_PREFIX = "tt:readers:"
TRIM_PER_CALL = 10_000  # entries one XTRIM may remove (its LIMIT): Redis stays responsive between the calls
CURSOR_PREFIX = "tt:cursor:"


def wall_ms() -> int:
    """The wall clock in ms, the time stream entry ids carry."""
    return time.time_ns() // 1_000_000


def readers_key(log_name: str) -> str:
    """The hash of a log's registered readers."""
    return READERS_PREFIX + log_name


def entry_ms(cursor: str) -> int | None:
    """The time part of a stream entry id (``ms-seq``), or None when it is not one."""
    ms, _, seq = cursor.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        return None
    return int(ms)


@dataclass(frozen=True, slots=True)
class TrimTuning:
    """The trimming constants of a service that writes a log (its ``Tuning`` derives from this)."""

    stream_trim_interval_s: float = tune(30.0, "the logs this service writes are trimmed to what their registered "
                                         "readers still need this often", minimum=1.0)
    stream_keep_s: float = tune(900.0, "every entry is kept at least this long: more than the router's 10-minute "
                                "re-append window after a Redis failover, and a while for an operator to read back",
                                minimum=600.0)
    stream_reader_max_lag_s: float = tune(86_400.0, "a registered reader this far behind (or registered this long "
                                          "without a cursor) no longer holds the log: a renamed or removed "
                                          "consumer must not let Redis run out of memory", minimum=3600.0)

    def trimmer(self, redis: Any, logs: Sequence[str], clock_ms: Callable[[], int] | None = None) -> LogTrimmer:
        """A :class:`LogTrimmer` of ``logs`` with these constants."""
        return LogTrimmer(redis, logs, clock_ms or wall_ms, interval_s=self.stream_trim_interval_s,
                          keep_s=self.stream_keep_s, max_pin_s=self.stream_reader_max_lag_s)


@dataclass(frozen=True)
class Floor:
    """What one trim decided: trim entries older than ``min_id`` (None: nothing), and the readers no longer
    waited for."""

    min_id: str | None
    stale: tuple[str, ...] = ()


def trim_floor(readers: Mapping[str, int], cursors: Mapping[str, str | None], now_ms: int, *,
               keep_s: float, max_pin_s: float) -> Floor:
    """Where to trim a log read by ``readers`` (name → registration time ms) whose saved cursors are ``cursors``
    (name → cursor, None when none was saved). Nothing without readers or while one without a cursor holds it."""
    if not readers:
        return Floor(None)
    stale: list[str] = []
    floor_ms = now_ms - int(keep_s * 1000)
    pin_after_ms = now_ms - int(max_pin_s * 1000)
    held = False
    for name in sorted(readers):
        cursor = cursors.get(name)
        at = entry_ms(cursor) if cursor else None
        if at is None:
            if readers[name] < pin_after_ms:
                stale.append(name)
                continue
            held = True  # registered, nothing saved yet: it may read from the oldest entry
            continue
        if at < pin_after_ms:
            stale.append(name)
            continue
        floor_ms = min(floor_ms, at)
    if held or floor_ms <= 0:
        return Floor(None, tuple(stale))
    return Floor(f"{floor_ms}-0", tuple(stale))


async def trim_before(redis: Any, name: str, min_id: str, *, per_call: int = TRIM_PER_CALL) -> int:
    """Remove the entries of log ``name`` older than ``min_id`` (whole stream nodes: approximate); returns how many.

    One approximate ``XTRIM`` removes at most ``LIMIT`` entries (Redis's default: 10,000), so a single call per
    round falls behind any log written faster than that per round (400 order events a second against a
    30-second round did) and the log grows to its length cap. Calls of ``per_call`` entries each (a few ms of
    Redis each, other clients served between them) are repeated until one removes nothing."""
    removed = 0
    while True:
        n = int(await redis.execute_command("XTRIM", name, "MINID", "~", min_id, "LIMIT", per_call))
        if not n:
            return removed
        removed += n


@dataclass
class TrimStats:
    """Counters of a trimmer."""

    rounds: int = 0
    trimmed: int = 0  # entries removed
    errors: int = 0
    stale: dict[str, int] = field(default_factory=dict)  # reader → rounds it was found stale


class LogTrimmer:
    """Trims the logs a service writes to what their registered readers still need (see the module)."""

    def __init__(self, redis: Any, logs: Sequence[str], clock_ms: Callable[[], int], *, interval_s: float,
                 keep_s: float, max_pin_s: float) -> None:
        """``redis`` is a redis-py asyncio client; ``clock_ms`` the wall clock in ms (stream ids are wall time)."""
        if keep_s < 0 or max_pin_s <= keep_s:
            raise ValueError("LogTrimmer needs 0 <= keep_s < max_pin_s")
        self.redis = redis
        self.logs = tuple(logs)
        self.clock_ms = clock_ms
        self.interval_s = interval_s
        self.keep_s = keep_s
        self.max_pin_s = max_pin_s
        self.stats = TrimStats()

    async def trim_once(self) -> int:
        """One round over every log; returns the entries removed."""
        removed = 0
        for name in self.logs:
            raw = await self.redis.hgetall(readers_key(name))
            readers = {_text(k): int(_text(v)) for k, v in raw.items() if _text(v).isdigit()}
            if not readers:
                continue
            names = sorted(readers)
            values = await self.redis.mget([CURSOR_PREFIX + n for n in names])
            cursors = {n: (_text(v) if v is not None else None) for n, v in zip(names, values, strict=True)}
            floor = trim_floor(readers, cursors, self.clock_ms(), keep_s=self.keep_s, max_pin_s=self.max_pin_s)
            for reader in floor.stale:
                self.stats.stale[reader] = self.stats.stale.get(reader, 0) + 1
                if self.stats.stale[reader] > 1:  # said once per process: a quiet reader stays stale for long
                    continue
                log.error("a registered reader has not read the log for longer than it is kept for it; trimmed "
                          "without waiting for it", extra={"log": name, "reader": reader,
                                                           "cursor": cursors.get(reader) or "",
                                                           "max_pin_s": self.max_pin_s})
            if floor.min_id is not None:
                removed += await trim_before(self.redis, name, floor.min_id)
        self.stats.rounds += 1
        self.stats.trimmed += removed
        return removed

    async def run(self) -> None:
        """Trim every ``interval_s`` until cancelled; a failed round is retried at the next."""
        while True:
            try:
                await self.trim_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round retries
                reraise_if_cancelling()
                self.stats.errors += 1
                log.warning("log trim failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(self.interval_s)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
