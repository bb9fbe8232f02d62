"""What the start-up's mark replay reads (:mod:`services.guard.mark_recovery`): the tick log's entries after the cursor
through which guard last saved every risen mark (kept in Redis, written after each complete mark flush), and the
time each trigger's row last changed (PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.exceptions
from google.protobuf.message import DecodeError
from psycopg_pool import AsyncConnectionPool

from common.fastredis import FastRedis
from common.livefeed import entry_key
from common.logread import entry_cursor, entry_payload
from common.streams import DurableLog
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)

MARKS_THROUGH_KEY = "tt:guard:marks_through"
# the change time in microseconds, exact (a timestamptz keeps microseconds)
_CHANGED = ("SELECT id, (extract(epoch FROM update_time) * 1000000)::bigint AS changed_us FROM triggers"
            " WHERE id = ANY(%s) AND state = 'ARMED'")


def _after(cursor: str) -> str:
    ms, seq = entry_key(cursor)
    return f"{ms}-{seq + 1}"


class MarkReplaySource:
    """The tick log (read with ``XRANGE`` over ``fast``: redis-py's reply parsing cost more than the rest of the
    replay), the saved cursor and the triggers' change times."""

    def __init__(self, fast: FastRedis, ticks: DurableLog, pool: AsyncConnectionPool[Any], *,
                 chunk: int = 4096) -> None:
        self.fast = fast
        self.ticks_log = ticks
        self.pool = pool
        self.chunk = chunk
        self.malformed = 0

    async def through(self) -> str | None:
        """The cursor of the last complete mark save, None when none is kept (or it does not parse)."""
        raw = await self.fast.get(MARKS_THROUGH_KEY)
        if raw is None:
            return None
        text = bytes(raw).decode(errors="replace")
        try:
            entry_key(text)
        except ValueError:
            log.warning("saved marks cursor ignored", extra={"cursor": text[:100]})
            return None
        return text

    async def save_through(self, cursor: str) -> None:
        """Every mark risen on the ticks up to ``cursor`` is saved."""
        await self.fast.set(MARKS_THROUGH_KEY, cursor)

    async def ticks(self, after: str, end: str) -> AsyncIterator[list[mpb.PriceTick]]:
        """The log's ticks after ``after`` through ``end``, in batches of at most ``chunk`` entries; an entry that does
        not parse is counted in :attr:`malformed` and skipped."""
        name, count, last = self.ticks_log.name.encode(), str(self.chunk).encode(), end.encode()
        start = _after(after)
        parse = mpb.PriceTick.FromString
        while True:
            rows = await self.fast.call(b"XRANGE", name, start.encode(), last, b"COUNT", count)
            if not rows:
                return
            batch: list[mpb.PriceTick] = []
            for _entry_id, fields in rows:
                payload = entry_payload(fields or [])
                try:
                    if payload is None:
                        raise DecodeError("no 'p' field")
                    batch.append(parse(payload))
                except DecodeError:
                    self.malformed += 1
            yield batch
            if len(rows) < self.chunk:
                return
            start = _after(entry_cursor(rows[-1][0]))

    async def trimmed(self, after: str) -> bool:
        """True when the log may no longer hold every entry after ``after``: its first entry is after it (the entry at
        ``after`` itself was trimmed by the length cap, and with it whatever came after it and before that first
        entry, if anything did), or Redis 7 says an entry after it was deleted (``XDEL``). False for a log not there.
        """
        try:
            reply = await self.fast.call(b"XINFO", b"STREAM", self.ticks_log.name.encode())
        except redis.exceptions.ResponseError:  # no such key: nothing was ever logged
            return False
        info = dict(zip(reply[::2], reply[1::2], strict=True))
        cursor = entry_key(after)
        first = info.get(b"first-entry")
        if first is not None and entry_key(bytes(first[0]).decode()) > cursor:
            return True
        deleted = info.get(b"max-deleted-entry-id")  # Redis 7; moved by XDEL only, not by trimming
        return deleted is not None and entry_key(bytes(deleted).decode()) > cursor

    async def changed_ns(self, ids: Sequence[str]) -> dict[str, int]:
        """When each of these ARMED triggers' rows last changed (Unix ns); the others are left out."""
        if not ids:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_CHANGED, (list(ids),))).fetchall()
        return {row["id"]: int(row["changed_us"]) * 1000 for row in rows}  # the pool's rows are dicts
