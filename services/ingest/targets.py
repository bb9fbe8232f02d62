"""The target filter: followed leaders from the Redis hot index, kept fresh by its invalidations.

A full reload happens on every (re)subscribe to the invalidation channel and whenever a message's
version is not the next one (a message was missed); a periodic version check covers a silent
channel. A leader that appears (new follow) is announced with the time to backfill from: its
subscriptions' creation time, bounded by ``lookback_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from common import hotindex
from common.pubsub import ChannelFollower
from common.retry import Backoff

log = logging.getLogger(__name__)
_RETRY = Backoff(0.2, 5.0)


class FollowedLeaders:
    """The set of followed leader wallets (lower-case); membership is the hot-path check."""

    def __init__(self, leaders: set[str] | None = None) -> None:
        self.leaders: set[str] = set(leaders or ())
        self.version = -1
        self.loaded = asyncio.Event()

    def __contains__(self, wallet: object) -> bool:
        return wallet in self.leaders

    def __len__(self) -> int:
        return len(self.leaders)


async def follow_since_s(redis: Any, leader: str, now_s: float, lookback_s: float) -> float:
    """When to backfill a newly followed leader from: the earliest time one of its active subscriptions last
    became ACTIVE (``active_time``: created, resumed, switched PAPER/LIVE; the router copies BUYs from then), but
    no earlier than ``now_s - lookback_s``. From creation alone, a resume backfilled the trades the leader made
    while its only subscription was PAUSED; from the last change of any kind (``update_time``), an edit (sizing)
    made before ingest saw the follow skipped trades the router copies. An index entry without ``active_time``
    (written before it existed) goes by the later of its creation and last change."""
    floor = now_s - lookback_s
    since = []
    for sub in await hotindex.subscriptions_of(redis, leader):
        marks = (sub.active_time,) if sub.active_time.seconds else (sub.create_time, sub.update_time)
        stamps = [t.seconds + t.nanos / 1e9 for t in marks if t.seconds]
        if stamps:
            since.append(max(stamps))
    return max(min(since), floor) if since else floor


class HotIndexWatcher:
    """Keeps :class:`FollowedLeaders` equal to the hot index; calls ``on_new_leader(leader, since_s)``."""

    def __init__(self, redis: Any, followed: FollowedLeaders, *,
                 on_new_leader: Callable[[str, float], None] | None = None,
                 on_reload: Callable[[], None] | None = None,
                 check_interval_s: float = 5.0, lookback_s: float = 330.0,
                 clock: Callable[[], float] = time.time, backoff: Backoff = _RETRY) -> None:
        self.redis = redis
        self.followed = followed
        self.on_new_leader = on_new_leader or (lambda _l, _s: None)
        self.on_reload = on_reload or (lambda: None)
        self.lookback_s = lookback_s
        self.clock = clock
        self.reloads = 0
        self.channel = ChannelFollower(
            redis, hotindex.CHANNEL, parse=hotindex.IndexChange.parse, on_message=self.apply_change,
            reload=self.reload, on_bad=self._reload_after_bad, on_tick=self.check_version, tick_s=check_interval_s,
            poll_s=min(check_interval_s, 1.0), backoff=backoff, log=log, failure_log="hot index watch failed",
            bad_log="bad hot-index message; reloading")

    async def reload(self) -> None:
        """Read the whole index; announce leaders that were not followed before (except on first load)."""
        version = await hotindex.version(self.redis)
        leaders = await hotindex.leaders(self.redis)
        first = self.followed.version < 0
        added = leaders - self.followed.leaders
        self.followed.leaders = leaders
        self.followed.version = version
        self.reloads += 1
        self.followed.loaded.set()
        self.on_reload()
        if not first:
            for leader in added:
                await self._announce(leader)

    async def _announce(self, leader: str) -> None:
        since = await follow_since_s(self.redis, leader, self.clock(), self.lookback_s)
        self.on_new_leader(leader, since)

    async def apply(self, raw: str | bytes) -> None:
        """Apply one invalidation message (raises ValueError on garbage)."""
        await self.apply_change(hotindex.IndexChange.parse(raw))

    async def apply_change(self, change: hotindex.IndexChange) -> None:
        """Apply one change (reload when it is not the next version)."""
        if change.version <= self.followed.version:
            return
        if change.version != self.followed.version + 1:
            await self.reload()
            return
        self.followed.version = change.version
        leader = change.leader.lower()
        if change.op == "upsert":
            if leader not in self.followed.leaders:
                self.followed.leaders.add(leader)
                await self._announce(leader)
        elif not await self.redis.sismember(hotindex.LEADERS_KEY, leader):
            self.followed.leaders.discard(leader)

    async def check_version(self) -> None:
        """Reload when the index moved on without a message that said so."""
        if await hotindex.version(self.redis) != self.followed.version:
            await self.reload()

    async def _reload_after_bad(self, _data: str | bytes) -> None:
        await self.reload()

    async def run(self) -> None:
        """Run until cancelled, resubscribing (and reloading) after any Redis failure."""
        await self.channel.run()
