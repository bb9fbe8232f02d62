"""The books orders are priced on: the stored book only when the venue confirmed it lately.

A stored book is trusted when it is fresh (:meth:`common.marketstate.BookSnapshot.fresh`): a snapshot
confirmed within ``max_age_s``. A stale or never-snapshotted one (left from before a restart, out of sync,
a market whose book went away) is not read as "no liquidity": while the book feed is alive its resync is
waited for, up to ``wait_s``; then the order is priced as without a book (a LIVE one from its reference
price, a PAPER one cannot fill). An asset whose wait ran out is not waited for again for ``cool_down_s``,
so a book that does not come back costs one wait, not one per order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from common.fastredis import FastRedis
from common.marketstate import BOOK_FEED_KEY, BookSnapshot, FeedBeat, book_key

log = logging.getLogger(__name__)

PARSED_MAX = 4096


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FreshBooks:
    """Reads stored books for pricing (``get`` of a redis-py-like client: the book and the feed's beat)."""

    def __init__(self, redis: Any, *, max_age_s: float = 20.0, wait_s: float = 1.0, poll_s: float = 0.05,
                 cool_down_s: float = 10.0, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.redis = redis
        self.max_age_ms = int(max_age_s * 1000)
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.cool_down_s = cool_down_s
        self.clock_ms = clock_ms
        self._parsed: dict[str, tuple[bytes | str, BookSnapshot]] = {}  # the same stored form: the same object
        self._gave_up: dict[str, float] = {}  # asset → when a wait for it ran out (monotonic)
        self.waited = 0
        self.unfresh = 0

    async def read(self, asset_id: str) -> BookSnapshot | None:
        """The asset's book when fresh (waiting up to ``wait_s`` for a stale one's resync), else None."""
        book, beat = await self._load(asset_id)
        if book is None:
            return None
        now = self.clock_ms()
        if book.fresh(now, self.max_age_ms, beat):
            return book
        if not self._may_wait(asset_id, beat, now):
            self.unfresh += 1
            return None
        self.waited += 1
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            book, beat = await self._load(asset_id)
            if book is not None and book.fresh(self.clock_ms(), self.max_age_ms, beat):
                self._gave_up.pop(asset_id, None)
                return book
        if len(self._gave_up) >= PARSED_MAX:
            self._gave_up.clear()
        self._gave_up[asset_id] = time.monotonic()
        self.unfresh += 1
        log.info("no fresh book in time: priced without it", extra={
            "asset_id": asset_id, "waited_s": self.wait_s,
            "age_ms": None if book is None else book.age_ms(self.clock_ms(), beat)})
        return None

    def market(self, asset_id: str) -> str:
        """The condition id the asset's stored book names as last read by :meth:`read`, fresh or not ("" when none
        was stored): a book too old to price on still names its token's market. No round trip."""
        known = self._parsed.get(asset_id)
        return known[1].condition_id if known is not None else ""

    def _may_wait(self, asset_id: str, beat: FeedBeat | None, now_ms: int) -> bool:
        """Waiting helps only while the book feed is alive (it resyncs the book) and the asset's last wait
        did not run out just now."""
        if self.wait_s <= 0 or beat is None or now_ms - beat.alive_ms > self.max_age_ms:
            return False
        gave_up = self._gave_up.get(asset_id)
        return gave_up is None or time.monotonic() - gave_up >= self.cool_down_s

    async def _load(self, asset_id: str) -> tuple[BookSnapshot | None, FeedBeat | None]:
        """The stored book (parsed again only when its stored form changed) and the feed's beat."""
        try:
            raw, beat_raw = await self._get_both(book_key(asset_id))
            if not raw:
                self._parsed.pop(asset_id, None)
                return None, None
            known = self._parsed.get(asset_id)
            if known is not None and known[0] == raw:
                book = known[1]
            else:
                book = BookSnapshot.from_json(raw)
                if len(self._parsed) >= PARSED_MAX:
                    self._parsed.clear()
                self._parsed[asset_id] = (raw, book)
        except Exception as exc:  # noqa: BLE001 - a live order can go without the book (limit from reference)
            log.warning("book unreadable", extra={"asset_id": asset_id, "error": repr(exc)[:200]})
            return None, None
        return book, FeedBeat.from_json(beat_raw)

    async def _get_both(self, key: str) -> tuple[bytes | str | None, bytes | str | None]:
        """The stored book at ``key`` and the feed's beat: one ``MGET`` on the executor's pipelined client (no task
        per read, one write), two ``GET``s at once on another client."""
        if isinstance(self.redis, FastRedis):
            raw, beat_raw = await self.redis.call("MGET", key, BOOK_FEED_KEY)
            return raw, beat_raw
        got = await asyncio.gather(self.redis.get(key), self.redis.get(BOOK_FEED_KEY))
        return got[0], got[1]
