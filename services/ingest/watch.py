"""Which assets the book feed follows: open positions ∪ armed triggers ∪ recent leader-trade assets.

Positions and triggers are Redis sets maintained by executor and guard (``common.marketstate``),
their changes announced on ``tt:watch:changed``; recent leader-trade assets are kept for ``recent_ttl_s`` in
memory and in the ZSET ``tt:ingest:recent_assets`` (score = expiry, seconds) so a restart keeps them.

The union is kept as a count per asset of the sources holding it, so a change costs what it changes, not the
size of the watched set, and what is announced is the difference: assets that joined and assets that left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from common.marketstate import WATCH_CHANNEL, WATCH_SETS, WatchChange, parse_watch_change
from common.pubsub import ChannelFollower
from services.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)
RECENT_KEY = "tt:ingest:recent_assets"
DRAIN_MAX = 1000  # change messages applied before the watched set is announced again


def _watch_change(data: str | bytes) -> WatchChange:
    change = parse_watch_change(data)
    if change is None:
        raise ValueError("not a watch change")
    return change


@dataclass
class WatchStats:
    """How the watched set was kept: whole reads of a watch set, differences applied, messages not understood."""

    full_reads: int = 0
    diffs: int = 0
    unknown_messages: int = 0


class WatchSet:
    """Keeps the watched assets and calls ``on_change(added, removed)`` whenever the set changes.

    The watch sets are kept here too: a message carrying a difference is applied as it is (O(change),
    however many assets are watched); a set is read whole at start, on a message asking for it, and
    every ``refresh_s`` (which also heals a message lost with the subscription)."""

    def __init__(self, redis: Any, on_change: Callable[[set[str], set[str]], Awaitable[None]], *,
                 recent_ttl_s: float = 3600.0, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.time, metrics: IngestMetrics | None = None) -> None:
        self.redis = redis
        self.metrics = metrics
        self.on_change = on_change
        self.recent_ttl_s = recent_ttl_s
        self.refresh_s = refresh_s
        self.clock = clock
        self.recent: dict[str, float] = {}
        self.sources: dict[str, set[str]] = {key: set() for key in WATCH_SETS}
        self.stats = WatchStats()
        self._counts: dict[str, int] = {}  # watched asset -> how many sources hold it (the watch sets, recent)
        self._added: set[str] = set()  # joined since the last announcement
        self._removed: set[str] = set()  # left since the last announcement
        self._sweep_at = 0.0  # recent assets are checked for expiry at most once a second
        self._pending: dict[str, float] = {}
        self._wake = asyncio.Event()
        self.channel = ChannelFollower(
            redis, WATCH_CHANNEL, parse=_watch_change, on_message=self.apply_change, reload=self._resubscribed,
            on_bad=self._not_understood, on_tick=self._refresh_due, tick_s=refresh_s, after_poll=self._after_poll,
            poll_s=0.05, drain_max=DRAIN_MAX, log=log, failure_log="watch set refresh failed",
            bad_log="watch change message not understood; reading every watch set")

    def note_trade_asset(self, asset_id: str) -> None:
        """A followed leader traded ``asset_id``: watch it for the next ``recent_ttl_s``."""
        expiry = self.clock() + self.recent_ttl_s
        known = asset_id in self.recent
        self.recent[asset_id] = expiry
        self._pending[asset_id] = expiry
        if not known:
            self._gain((asset_id,))
            self._wake.set()

    @property
    def current(self) -> set[str]:
        """The watched assets as kept now (announced or about to be)."""
        return set(self._counts)

    def _gain(self, assets: Iterable[str]) -> None:
        counts = self._counts
        for asset_id in assets:
            n = counts.get(asset_id, 0)
            counts[asset_id] = n + 1
            if not n:
                if asset_id in self._removed:
                    self._removed.discard(asset_id)
                else:
                    self._added.add(asset_id)

    def _lose(self, assets: Iterable[str]) -> None:
        counts = self._counts
        for asset_id in assets:
            n = counts.get(asset_id, 0) - 1
            if n > 0:
                counts[asset_id] = n
                continue
            counts.pop(asset_id, None)
            if asset_id in self._added:
                self._added.discard(asset_id)
            else:
                self._removed.add(asset_id)

    async def load_recent(self) -> None:
        """Restore recent assets saved before a restart."""
        now = self.clock()
        await self.redis.zremrangebyscore(RECENT_KEY, "-inf", now)
        for member, score in await self.redis.zrange(RECENT_KEY, 0, -1, withscores=True):
            asset_id = member.decode() if isinstance(member, bytes) else str(member)
            if asset_id not in self.recent:
                self._gain((asset_id,))
            self.recent[asset_id] = max(self.recent.get(asset_id, 0.0), float(score))

    async def _read(self, key: str) -> None:
        members = await self.redis.smembers(key)
        new = {a.decode() if isinstance(a, bytes) else str(a) for a in members}
        old = self.sources[key]
        self.sources[key] = new
        self._gain(new - old)
        self._lose(old - new)
        self.stats.full_reads += 1

    async def _settle(self) -> None:
        """Save the pending recent assets; drop the expired ones (checked at most once a second)."""
        now = self.clock()
        if self._pending:
            pending, self._pending = self._pending, {}
            await self.redis.zadd(RECENT_KEY, pending)
        if now >= self._sweep_at:
            self._sweep_at = now + 1.0
            expired = [a for a, exp in self.recent.items() if exp <= now]
            for asset_id in expired:
                del self.recent[asset_id]
            self._lose(expired)

    async def compute(self) -> set[str]:
        """The current watched set, every watch set read whole."""
        for key in WATCH_SETS:
            await self._read(key)
        self._sweep_at = 0.0
        await self._settle()
        return self.current

    async def apply_change(self, change: WatchChange) -> None:
        """Apply one ``tt:watch:changed`` message to the kept watch sets: a difference as it is, or read its set
        again (a message not understood reads every set again: ``_not_understood``)."""
        if change.reread:
            await self._read(change.key)
        else:
            kept = self.sources[change.key]
            added = set(change.added) - kept
            kept.update(added)
            self._gain(added)
            removed = kept.intersection(change.removed)
            kept.difference_update(removed)
            self._lose(removed)
            self.stats.diffs += 1

    async def _not_understood(self, _data: str | bytes) -> None:
        self.stats.unknown_messages += 1
        if self.metrics is not None:
            self.metrics.parse_error("watch", "NOT_A_WATCH_CHANGE")
        for key in WATCH_SETS:
            await self._read(key)

    async def announce(self) -> None:
        """Call ``on_change`` with what joined and what left since the last announcement, if anything did."""
        if self._added or self._removed:
            added, removed = self._added, self._removed
            self._added, self._removed = set(), set()
            await self.on_change(added, removed)

    async def refresh(self) -> None:
        """Read every watch set again; announce a change."""
        await self.compute()
        await self.announce()

    async def _resubscribed(self) -> None:
        await self.load_recent()
        await self.refresh()

    async def _refresh_due(self) -> None:
        self._wake.clear()  # the refresh announces the noted trade assets too
        await self.refresh()

    async def _after_poll(self, handled: int) -> None:
        if handled or self._wake.is_set():  # what was announced meanwhile, then one announcement
            self._wake.clear()
            await self._settle()
            await self.announce()

    async def run(self) -> None:
        """Follow the watch channel and refresh periodically until cancelled."""
        await self.channel.run()
