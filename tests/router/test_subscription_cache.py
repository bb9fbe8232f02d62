"""The in-memory hot-index cache follows the invalidation channel on real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.router.adapters.subscriptions import SubscriptionCache
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

LEADER = "0x" + "f5" * 20


def _sub(sid: str, leader: str = LEADER, fixed: str = "25", state: int = spb.SUBSCRIPTION_STATE_ACTIVE,
         wallet: str = "w_1") -> spb.Subscription:
    return spb.Subscription(id=sid, follower_wallet_id=wallet, follower_proxy="0x" + "6a" * 20, leader_proxy=leader,
                            state=state, mode=cpb.EXECUTION_MODE_PAPER,  # type: ignore[arg-type]
                            sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd=fixed))


async def test_cache_follows_changes(r: aioredis.Redis) -> None:
    await hotindex.upsert(r, _sub("sub_1"))
    cache = SubscriptionCache(r, check_interval_s=0.1)
    task = asyncio.create_task(cache.run())
    await asyncio.wait_for(cache.ready.wait(), 5)
    assert [f.subscription_id for f in await cache.followers_of(LEADER.upper().replace("0X", "0x"))] == ["sub_1"]

    await hotindex.upsert(r, _sub("sub_2", wallet="w_2"))
    await eventually(lambda: cache.cached(LEADER) == 2)
    await hotindex.upsert(r, _sub("sub_1", fixed="40"))

    async def fixed_is_40() -> bool:
        [f1, _f2] = await cache.followers_of(LEADER)
        return f1.sizing.fixed_usd is not None and str(f1.sizing.fixed_usd) == "40"

    await eventually(fixed_is_40)
    await hotindex.upsert(r, _sub("sub_1", state=spb.SUBSCRIPTION_STATE_PAUSED))
    await hotindex.remove(r, LEADER, "sub_2")
    await eventually(lambda: cache.cached(LEADER) == 0)
    reloads = cache.reloads

    # a change whose message was lost (version moved, no message): the periodic check reloads everything
    other = "0x" + "aa" * 20
    await r.hset(hotindex.leader_key(other), "sub_9", hotindex.encode(_sub("sub_9", leader=other)))
    await r.sadd(hotindex.LEADERS_KEY, other)
    await r.incr(hotindex.VERSION_KEY)
    await eventually(lambda: cache.reloads > reloads and cache.cached(other) == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_version_gap_reloads_everything(r: aioredis.Redis) -> None:
    cache = SubscriptionCache(r)
    await cache.reload_all()
    assert cache.version == 0
    await hotindex.upsert(r, _sub("sub_1"))
    v = await hotindex.upsert(r, _sub("sub_2", wallet="w_2"))
    await cache.apply(hotindex.IndexChange(LEADER, "sub_2", "upsert", v))  # v == 2: a gap after 0
    assert cache.version == v and len(await cache.followers_of(LEADER)) == 2
    await cache.apply(hotindex.IndexChange(LEADER, "sub_2", "upsert", 1))  # old news: ignored
    assert cache.version == v


async def test_miss_reads_redis_directly_and_bad_entries_are_invalid(r: aioredis.Redis) -> None:
    cache = SubscriptionCache(r)
    await cache.reload_all()
    await r.hset(hotindex.leader_key(LEADER), "sub_bad", "{not json")
    await hotindex.upsert(r, _sub("sub_1", fixed="abc"))
    followers = await cache.followers_of(LEADER)  # no message processed: read on the miss
    assert [(f.subscription_id, "sizing.fixedUsd" in f.invalid) for f in followers] == [("sub_1", True)]


async def test_a_change_rereads_only_its_subscription(r: aioredis.Redis) -> None:
    for i in range(5):
        await hotindex.upsert(r, _sub(f"sub_{i}", wallet=f"w_{i}"))
    cache = SubscriptionCache(r)
    await cache.reload_all()
    # an entry changed behind the cache's back stays as loaded: only the named subscription is re-read
    await r.hset(hotindex.leader_key(LEADER), "sub_0", hotindex.encode(_sub("sub_0", fixed="99")))
    v = await hotindex.upsert(r, _sub("sub_3", fixed="7", wallet="w_3"))
    await cache.apply(hotindex.IndexChange(LEADER, "sub_3", "upsert", v))
    by_id = {f.subscription_id: f for f in await cache.followers_of(LEADER)}
    assert [str(by_id[s].sizing.fixed_usd) for s in ("sub_0", "sub_3")] == ["25", "7"]
    v = await hotindex.remove(r, LEADER, "sub_4")
    await cache.apply(hotindex.IndexChange(LEADER, "sub_4", "remove", v))
    v = await hotindex.upsert(r, _sub("sub_5", wallet="w_5"))
    await cache.apply(hotindex.IndexChange(LEADER, "sub_5", "upsert", v))
    assert [f.subscription_id for f in await cache.followers_of(LEADER)] == [
        "sub_0", "sub_1", "sub_2", "sub_3", "sub_5"]
    assert cache.reloads == 1
    for i in (0, 1, 2, 3, 5):
        v = await hotindex.remove(r, LEADER, f"sub_{i}")
        await cache.apply(hotindex.IndexChange(LEADER, f"sub_{i}", "remove", v))
    assert cache.cached(LEADER) == 0


OTHER = "0x" + "aa" * 20


async def test_a_pause_after_the_index_was_rebuilt_applies_while_other_changes_keep_coming(r: aioredis.Redis) -> None:
    # History: the index has seen 40 changes (version 40); the follower sub_1 copies LEADER.
    await hotindex.upsert(r, _sub("sub_1"))
    for i in range(39):
        await hotindex.upsert(r, _sub("sub_o", leader=OTHER, fixed=str(10 + i), wallet="w_o"))
    cache = SubscriptionCache(r, check_interval_s=0.5)
    task = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(cache.ready.wait(), 5)
        assert cache.version == 40 and [f.subscription_id for f in await cache.followers_of(LEADER)] == ["sub_1"]

        # Redis is flushed (FLUSHALL/FLUSHDB by an operator, or a fresh empty server on the same
        # connection); control's resync rebuilds the index from PostgreSQL: version restarts at 1.
        await r.flushdb()
        await hotindex.upsert(r, _sub("sub_1"))
        await hotindex.upsert(r, _sub("sub_o", leader=OTHER, wallet="w_o"))
        # The user pauses sub_1 (control removes it from the index, version 3, message published).
        await hotindex.remove(r, LEADER, "sub_1")
        assert await r.hlen(hotindex.leader_key(LEADER)) == 0

        # Other subscriptions keep changing (PATCHes, perf scale, creates), one every 0.2 s, for
        # 6 check intervals.
        for i in range(15):
            await asyncio.sleep(0.2)
            await hotindex.upsert(r, _sub("sub_o", leader=OTHER, fixed=str(50 + i), wallet="w_o"))

        still = [f.subscription_id for f in await cache.followers_of(LEADER)]
        assert still == [], (f"router still routes to paused {still} 3 s (6 check intervals) after the pause; "
                             f"cache version {cache.version} vs index version {await hotindex.version(r)}")
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the cache ignored its cancellation: the router's shutdown would wait for ever"


class _SlowHgetall:
    """The router's Redis client, with the next HGETALL's reply held until released (as when the
    routing task resumes after the cache task has handled messages)."""

    def __init__(self, real: aioredis.Redis) -> None:
        self._real = real
        self.hold = False
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def hgetall(self, key: str) -> Any:
        raw = await self._real.hgetall(key)
        if self.hold:
            self.hold = False
            self.read_done.set()
            await self.release.wait()
        return raw


async def test_a_miss_read_across_a_change_is_not_cached(r: aioredis.Redis) -> None:
    slow = _SlowHgetall(r)
    cache = SubscriptionCache(slow)
    await cache.reload_all()  # empty index, version 0

    # A new subscription (v1) on a leader the cache does not hold yet: its message is in flight
    # when a trade of LEADER arrives, so followers_of misses and reads Redis directly.
    v1 = await hotindex.upsert(r, _sub("sub_1"))
    slow.hold = True
    routing = asyncio.create_task(cache.followers_of(LEADER))
    await asyncio.wait_for(slow.read_done.wait(), 5)  # HGETALL executed: it saw sub_1 ACTIVE

    # The user pauses it (v2); the cache task handles both messages meanwhile.
    v2 = await hotindex.remove(r, LEADER, "sub_1")
    await cache.apply(hotindex.IndexChange(LEADER, "sub_1", "upsert", v1))
    await cache.apply(hotindex.IndexChange(LEADER, "sub_1", "remove", v2))
    assert cache.cached(LEADER) == 0

    slow.release.set()
    await routing  # the routing task resumes and stores what it read

    # the cache is at the index's version: no check would ever reload a stale entry
    assert cache.version == await hotindex.version(r)
    still = [f.subscription_id for f in await cache.followers_of(LEADER)]
    assert still == [], f"paused {still} is cached as ACTIVE at the index's current version (no reload will come)"


async def test_a_change_for_a_leader_not_in_the_cache_keeps_its_other_followers(r: aioredis.Redis) -> None:
    """A leader whose hash holds several subscriptions but who is missing from ``tt:leaders`` when the cache
    reloads is not cached; the change message of the upsert that puts it back reads the leader whole, not just
    the changed subscription (which would cache that follower alone, and the version check would never repair
    it: the leader's other followers would get no copy and no skip)."""
    for i in (1, 2, 3):
        await hotindex.upsert(r, _sub(f"sub_{i}", wallet=f"w_{i}"))
    await r.srem(hotindex.LEADERS_KEY, LEADER)  # the member is gone, the hash is intact
    cache = SubscriptionCache(r)
    await cache.reload_all()
    version = await hotindex.upsert(r, _sub("sub_1", wallet="w_1"))  # control's resync puts the leader back
    await cache.apply(hotindex.IndexChange(LEADER, "sub_1", "upsert", version))

    assert cache.version == await hotindex.version(r)
    assert [f.subscription_id for f in await cache.followers_of(LEADER)] == ["sub_1", "sub_2", "sub_3"]
