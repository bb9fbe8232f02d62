"""Market state in Redis, kept by ingest: market rules (tick size, minimum size) cached, stored books and marks
(the ``Markets`` / ``MarketCache`` ports)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from common.marketstate import (
    BOOK_FEED_KEY,
    BookSnapshot,
    FeedBeat,
    MarketInfo,
    book_key,
    market_key,
    read_market,
)


class RedisMarkets:
    """Market info (cached for ``cache_s``) and marks from ingest's Redis state."""

    def __init__(self, redis: Any, *, cache_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self.clock = clock
        self.wall_ms = wall_ms  # Unix ms, to judge a book's freshness
        self._cache: dict[str, tuple[float, MarketInfo]] = {}

    async def market(self, asset_id: str) -> MarketInfo | None:
        """Market info, from the cache when fresh (an unknown market is asked again every time)."""
        now = self.clock()
        hit = self._cache.get(asset_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        info = await read_market(self.redis, asset_id)
        if info is not None:
            self._cache[asset_id] = (now, info)
        return info

    async def prefetch(self, asset_ids: Iterable[str]) -> int:
        """Cache the market info of many assets in pipelined round trips (start-up); returns how many exist."""
        ids = list(asset_ids)
        found = 0
        now = self.clock()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for asset_id in chunk:
                pipe.hgetall(market_key(asset_id))
            for asset_id, raw in zip(chunk, await pipe.execute(), strict=True):
                if raw:
                    self._cache[asset_id] = (now, MarketInfo.from_hash(raw))
                    found += 1
        return found

    def forget(self, asset_id: str) -> None:
        """Drop a cached entry (the tick size changed)."""
        self._cache.pop(asset_id, None)

    async def books(self, asset_ids: Iterable[str]) -> dict[str, BookSnapshot]:
        """Stored books of the assets that have one."""
        return (await self.books_and_feed(asset_ids))[0]

    async def books_and_feed(self, asset_ids: Iterable[str]) -> tuple[dict[str, BookSnapshot], FeedBeat | None]:
        """Stored books of the assets that have one, and the book feed's beat read with the first of them (to
        judge each book with :meth:`BookSnapshot.fresh`)."""
        ids = list(asset_ids)
        out: dict[str, BookSnapshot] = {}
        beat: FeedBeat | None = None
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            raws = await self.redis.mget([book_key(a) for a in chunk] + ([BOOK_FEED_KEY] if start == 0 else []))
            if start == 0:
                beat = FeedBeat.from_json(raws.pop())
            for asset_id, raw in zip(chunk, raws, strict=True):
                if raw:
                    out[asset_id] = BookSnapshot.from_json(raw)
        return out, beat

    async def marks(self, asset_ids: Iterable[str]) -> dict[str, Decimal]:
        """Marks of the assets with a book."""
        out = {}
        for asset_id, book in (await self.books(asset_ids)).items():
            mark = book.mark
            if mark is not None:
                out[asset_id] = mark
        return out

    async def fresh_marks(self, asset_ids: Iterable[str], max_age_ms: int) -> tuple[dict[str, Decimal], set[str]]:
        """Marks of the assets with a book, and those whose book the venue confirmed within ``max_age_ms``
        (:meth:`BookSnapshot.fresh` against the feed's beat: a book of a feed session that is over never is)."""
        books, beat = await self.books_and_feed(asset_ids)
        now = self.wall_ms()
        marks: dict[str, Decimal] = {}
        fresh: set[str] = set()
        for asset_id, book in books.items():
            mark = book.mark
            if mark is None:
                continue
            marks[asset_id] = mark
            if book.fresh(now, max_age_ms, beat):
                fresh.add(asset_id)
        return marks, fresh
