"""Which assets the book feed follows: open positions ∪ armed triggers ∪ recent leader-trade assets.

Positions and triggers are Redis sets maintained by executor and guard (``common.marketstate``),
their changes announced on ``tt:watch:changed``; recent leader-trade assets are kept for ``recent_ttl_s`` in
memory and in the ZSET ``tt:ingest:recent_assets`` (score = expiry, seconds) so a restart keeps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from common.cancel import reraise_if_cancelling
from common.marketstate import WATCH_CHANNEL, WATCH_SETS, parse_watch_change
from common.retry import Backoff
from services.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)
RECENT_KEY = "tt:ingest:recent_assets"
DRAIN_MAX = 1000  # change messages applied before the watched set is announced again


@dataclass
class WatchStats:
    """How the watched set was kept: whole reads of a watch set, differences applied, messages not understood."""

    full_reads: int = 0
    diffs: int = 0
    unknown_messages: int = 0


class WatchSet:
    """Computes the watched assets and calls ``on_change(assets)`` whenever the set changes.

    The watch sets are kept here too: a message carrying a difference is applied as it is (O(change),
    however many assets are watched); a set is read whole at start, on a message asking for it, and
    every ``refresh_s`` (which also heals a message lost with the subscription)."""

    def __init__(self, redis: Any, on_change: Callable[[set[str]], Awaitable[None]], *,
                 recent_ttl_s: float = 3600.0, refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.time, metrics: IngestMetrics | None = None) -> None:
        self.redis = redis
        self.metrics = metrics
        self.on_change = on_change
        self.recent_ttl_s = recent_ttl_s
        self.refresh_s = refresh_s
        self.clock = clock
        self.recent: dict[str, float] = {}
        self.current: set[str] = set()
        self.sources: dict[str, set[str]] = {key: set() for key in WATCH_SETS}
        self.stats = WatchStats()
        self._pending: dict[str, float] = {}
        self._wake = asyncio.Event()

    def note_trade_asset(self, asset_id: str) -> None:
        """A followed leader traded ``asset_id``: watch it for the next ``recent_ttl_s``."""
        expiry = self.clock() + self.recent_ttl_s
        known = asset_id in self.recent
        self.recent[asset_id] = expiry
        self._pending[asset_id] = expiry
        if not known:
            self._wake.set()

    async def load_recent(self) -> None:
        """Restore recent assets saved before a restart."""
        now = self.clock()
        await self.redis.zremrangebyscore(RECENT_KEY, "-inf", now)
        for member, score in await self.redis.zrange(RECENT_KEY, 0, -1, withscores=True):
            asset_id = member.decode() if isinstance(member, bytes) else str(member)
            self.recent[asset_id] = max(self.recent.get(asset_id, 0.0), float(score))

    async def _read(self, key: str) -> None:
        members = await self.redis.smembers(key)
        self.sources[key] = {a.decode() if isinstance(a, bytes) else str(a) for a in members}
        self.stats.full_reads += 1

    async def _union(self) -> set[str]:
        """The watched set from the kept watch sets and the recent assets (also saves pending recent assets)."""
        now = self.clock()
        if self._pending:
            pending, self._pending = self._pending, {}
            await self.redis.zadd(RECENT_KEY, pending)
        for asset_id in [a for a, exp in self.recent.items() if exp <= now]:
            del self.recent[asset_id]
        return set().union(*self.sources.values(), self.recent)

    async def compute(self) -> set[str]:
        """The current watched set, every watch set read whole."""
        for key in WATCH_SETS:
            await self._read(key)
        return await self._union()

    async def apply(self, data: str | bytes) -> None:
        """Apply one ``tt:watch:changed`` message to the kept watch sets (a difference as it is; a set to read
        again, or every set when the message is not understood)."""
        change = parse_watch_change(data)
        if change is None:
            self.stats.unknown_messages += 1
            if self.metrics is not None:
                self.metrics.parse_error("watch", "NOT_A_WATCH_CHANGE")
            log.warning("watch change message not understood; reading every watch set",
                        extra={"message": str(data)[:200]})
            for key in WATCH_SETS:
                await self._read(key)
        elif change.reread:
            await self._read(change.key)
        else:
            kept = self.sources[change.key]
            kept.update(change.added)
            kept.difference_update(change.removed)
            self.stats.diffs += 1

    async def announce(self, assets: set[str]) -> None:
        """Call ``on_change`` when ``assets`` differs from the set announced last."""
        if assets != self.current:
            self.current = assets
            await self.on_change(set(assets))

    async def refresh(self) -> None:
        """Read every watch set again; announce a change."""
        await self.announce(await self.compute())

    async def run(self) -> None:
        """Follow the watch channel and refresh periodically until cancelled."""
        rng = random.Random()
        attempt = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(WATCH_CHANNEL)
                await self.load_recent()
                await self.refresh()
                attempt = 0
                next_refresh = time.monotonic() + self.refresh_s
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
                    reraise_if_cancelling()  # a cancel that met the read's timeout came back as that timeout
                    due = time.monotonic() >= next_refresh
                    if due:  # a message taken now is in the sets read whole (it came after its change)
                        self._wake.clear()
                        await self.refresh()
                        next_refresh = time.monotonic() + self.refresh_s
                        continue
                    if msg is None and not self._wake.is_set():
                        continue
                    self._wake.clear()
                    drained = 0
                    while msg is not None:  # what was announced meanwhile, then one announcement
                        await self.apply(msg["data"])
                        drained += 1
                        msg = (await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
                               if drained < DRAIN_MAX else None)
                    await self.announce(await self._union())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: resubscribe
                reraise_if_cancelling()
                delay = Backoff(0.2, 5.0).delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("watch set refresh failed", extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()
