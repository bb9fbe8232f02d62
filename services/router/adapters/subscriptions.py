"""In-memory cache of the hot index (leader → parsed active subscriptions), kept fresh by the
invalidation channel: a change message reloads its leader; (re)subscribing or a version gap reloads
everything; a periodic version check is the safety net for lost messages."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common import hotindex
from common.pubsub import ChannelFollower
from common.retry import Backoff
from services.router.domain.model import Follower
from services.router.inbound import parse_follower

log = logging.getLogger(__name__)


def _parse_one(value: Any) -> Follower | None:
    try:
        return parse_follower(hotindex.decode(value))
    except Exception:  # one unreadable entry must not hide the others
        log.exception("unreadable hot-index entry")
        return None


def _parse(raw: dict[Any, Any]) -> dict[str, Follower]:
    """Subscription id → follower, for the readable entries."""
    return {f.subscription_id: f for f in map(_parse_one, raw.values()) if f is not None}


def _in_order(followers: dict[str, Follower]) -> tuple[Follower, ...]:
    return tuple(sorted(followers.values(), key=lambda f: f.subscription_id))


class SubscriptionCache:
    """Followers per leader, from Redis, refreshed by ``tt:index:changed``."""

    def __init__(self, redis: Any, *, check_interval_s: float = 5.0,
                 backoff: Backoff | None = None) -> None:
        self.redis = redis
        self.version = -1
        self.reloads = 0
        self.ready = asyncio.Event()
        self._known: dict[str, dict[str, Follower]] = {}  # leader → subscription id → follower
        self._by_leader: dict[str, tuple[Follower, ...]] = {}  # the same in subscription order, made on a read
        self._changes = 0  # bumped by every change applied: a miss read across one is not cached
        self.channel = ChannelFollower(
            redis, hotindex.CHANNEL, parse=hotindex.IndexChange.parse, on_message=self.apply,
            reload=self.reload_all, on_tick=self.check_version, tick_s=check_interval_s, poll_s=1.0,
            backoff=backoff or Backoff(0.05, 2.0), log=log, failure_log="subscription cache resubscribing",
            bad_log="bad index change message")

    async def followers_of(self, leader: str) -> tuple[Follower, ...]:
        """Active followers of a leader (reads Redis directly on a miss, e.g. a subscription created
        a moment ago whose change message is still in flight)."""
        leader = leader.lower()
        hit = self._by_leader.get(leader)
        if hit is not None:
            return hit
        known = self._known.get(leader)
        if known is not None:
            hit = self._by_leader[leader] = _in_order(known)
            return hit
        changes = self._changes
        followers = _parse(await self.redis.hgetall(hotindex.leader_key(leader)))
        # a change applied while the read was out may be newer than what it read: keep the change's
        if followers and changes == self._changes and leader not in self._known:
            self._known[leader] = followers
        return _in_order(followers)

    def cached(self, leader: str) -> int:
        """How many followers of ``leader`` the cache holds (0: not cached); reads nothing."""
        return len(self._known.get(leader.lower(), ()))

    async def reload_all(self) -> None:
        """Reload every leader (version read first, so later changes are not missed)."""
        version = await hotindex.version(self.redis)
        leaders = sorted(await hotindex.leaders(self.redis))
        pipe = self.redis.pipeline(transaction=False)
        for leader in leaders:
            pipe.hgetall(hotindex.leader_key(leader))
        raws = await pipe.execute() if leaders else []
        parsed = {leader: _parse(raw) for leader, raw in zip(leaders, raws, strict=True)}
        self._known = {leader: followers for leader, followers in parsed.items() if followers}
        self._by_leader = {}
        self._changes += 1
        self.version = version
        self.reloads += 1
        self.ready.set()
        log.info("subscriptions reloaded", extra={"leaders": len(leaders), "version": version})

    async def reload_leader(self, leader: str) -> None:
        """Reload one leader's followers."""
        leader = leader.lower()
        self._changes += 1
        followers = _parse(await self.redis.hgetall(hotindex.leader_key(leader)))
        self._by_leader.pop(leader, None)
        if followers:
            self._known[leader] = followers
        else:
            self._known.pop(leader, None)

    async def reload_subscription(self, leader: str, subscription_id: str) -> None:
        """Re-read one subscription of a leader (present → upserted, absent → removed): a change costs one
        entry, not the leader's whole follower list (a leader with 1,000 followers gaining 1,000 more
        would otherwise re-parse a million entries), and the ordered list is made again only at the next
        read (10,000 subscriptions created in a row cost 10,000 entries, not 50 million). A leader not cached
        is read whole: patching one entry into nothing would cache that follower alone and hide the others."""
        leader = leader.lower()
        if leader not in self._known:
            await self.reload_leader(leader)
            return
        self._changes += 1
        raw = await self.redis.hget(hotindex.leader_key(leader), subscription_id)
        follower = _parse_one(raw) if raw is not None else None
        known = self._known.get(leader)
        if known is None:  # emptied (and dropped) while the read was out
            known = self._known[leader] = {}
        self._by_leader.pop(leader, None)
        if follower is not None:
            known[subscription_id] = follower
        else:
            known.pop(subscription_id, None)
        if not known:
            del self._known[leader]

    async def apply(self, change: hotindex.IndexChange) -> None:
        """Handle one change message."""
        if change.version <= self.version:
            return
        if change.version != self.version + 1:
            await self.reload_all()
            return
        if change.subscription_id:
            await self.reload_subscription(change.leader, change.subscription_id)
        else:
            await self.reload_leader(change.leader)
        self.version = change.version

    async def check_version(self) -> None:
        """Reload everything when the index is not at our version. On a timer, not only when the channel is
        quiet: after the index was rebuilt (its version starts again below ours) every message looks old,
        and changes kept coming."""
        if await hotindex.version(self.redis) != self.version:
            await self.reload_all()

    async def run(self) -> None:
        """Follow the invalidation channel until cancelled, resubscribing (and reloading) on failure."""
        await self.channel.run()
