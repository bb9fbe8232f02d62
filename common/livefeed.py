"""The newest entries of a durable log, kept in memory by the process that writes the log.

A layer's gRPC stream serves its log to the next layer. Reading every entry back from Redis costs a
round trip and a wake-up per event; the writer already holds each entry when Redis confirms it, so
it publishes it here and the stream servers read from memory. Redis stays the durable copy: a
reader whose cursor is older than what memory covers (a consumer catching up after a restart, or a
slow one the buffer outran) reads Redis until it reaches the covered range.

Rules that keep it exact:
- the process must be the log's only writer, and it must publish every entry it appends, in log
  order (one appending task, or appends serialized by a lock);
- memory covers the log from ``covered_after`` (exclusive): every entry with a larger id is in the
  buffer. Until :meth:`LiveFeed.prime` has learnt the log's last id, nothing is covered.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque

log = logging.getLogger(__name__)

EntryKey = tuple[int, int]


def entry_key(cursor: str) -> EntryKey:
    """A Redis stream id ``ms-seq`` as a comparable pair (``ms`` alone means ``ms-0``)."""
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


class LiveFeed:
    """A bounded, ordered buffer of (cursor, payload) with wake-ups for the readers."""

    def __init__(self, *, max_entries: int = 50_000, max_bytes: int = 8 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._keys: deque[EntryKey] = deque()
        self._entries: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._covered_after: EntryKey | None = None
        self._changed = asyncio.Event()
        self.published = 0
        self.out_of_order = 0

    @property
    def covered_after(self) -> EntryKey | None:
        """Every entry after this id is in memory (None: memory covers nothing yet)."""
        return self._covered_after

    def prime(self, last_cursor: str) -> None:
        """Start covering: ``last_cursor`` is the log's last id read before this process appended anything
        it has not published (entries it published meanwhile are kept)."""
        key = entry_key(last_cursor)
        while self._keys and self._keys[0] <= key:
            self._drop_oldest()
        self._covered_after = key if self._covered_after is None or key > self._covered_after else self._covered_after

    def invalidate(self, covered_after: EntryKey | None = None) -> None:
        """Forget every entry: readers go back to the durable log, which memory covers again only after
        ``covered_after`` (None: not until the next :meth:`prime`)."""
        self._keys.clear()
        self._entries.clear()
        self._bytes = 0
        self._covered_after = covered_after
        self._wake()

    def publish(self, cursor: str, payload: bytes) -> None:
        """Record an entry the process appended (in log order)."""
        key = entry_key(cursor)
        if self._keys and key <= self._keys[-1]:
            # A writer broke the ordering rule: forget memory so every reader goes back to Redis, and cover
            # nothing until the next prime. Covering what follows this entry would let a reader already past it
            # skip the entries published before it and not yet read (and any still to come out of order).
            self.out_of_order += 1
            log.error("live feed entry out of order; readers fall back to the durable log",
                      extra={"cursor": cursor})
            self.invalidate(None)
            return
        self._keys.append(key)
        self._entries.append((cursor, payload))
        self._bytes += len(payload)
        self.published += 1
        while len(self._keys) > self.max_entries or (self._bytes > self.max_bytes and len(self._keys) > 1):
            self._drop_oldest()
        self._wake()

    def covers(self, cursor: str) -> bool:
        """True when every entry after ``cursor`` is in memory."""
        return self._covered_after is not None and entry_key(cursor) >= self._covered_after

    def after(self, cursor: str, limit: int = 512) -> list[tuple[str, bytes]]:
        """Buffered entries after ``cursor`` (call only when :meth:`covers` is True)."""
        key = entry_key(cursor)
        if not self._keys or key >= self._keys[-1]:
            return []
        i = bisect.bisect_right(self._keys, key)
        n = min(len(self._keys) - i, limit)
        return [self._entries[i + j] for j in range(n)] if n > 0 else []

    def changed(self) -> asyncio.Event:
        """An event set at the next publish (take it before checking for entries)."""
        return self._changed

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _drop_oldest(self) -> None:
        key = self._keys.popleft()
        _, payload = self._entries.popleft()
        self._bytes -= len(payload)
        if self._covered_after is not None and key > self._covered_after:
            self._covered_after = key
