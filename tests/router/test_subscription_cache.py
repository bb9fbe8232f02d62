"""The in-memory hot-index cache follows the invalidation channel on real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.router.adapters.subscriptions import SubscriptionCache
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

LEADER = "0x" + "f5" * 20


def _sub(sid: str, leader: str = LEADER, fixed: str = "25", state: int = spb.SUBSCRIPTION_STATE_ACTIVE,
         wallet: str = "w_1") -> spb.Subscription:
    return spb.Subscription(id=sid, follower_wallet_id=wallet, follower_proxy="0x" + "6a" * 20, leader_proxy=leader,
                            state=state, mode=cpb.EXECUTION_MODE_PAPER,  # type: ignore[arg-type]
                            sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd=fixed))


@pytest.fixture
async def r(redis_url: str):  # type: ignore[no-untyped-def]
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_cache_follows_changes(r: aioredis.Redis) -> None:
    await hotindex.upsert(r, _sub("sub_1"))
    cache = SubscriptionCache(r, check_interval_s=0.1)
    task = asyncio.create_task(cache.run())
    await asyncio.wait_for(cache.ready.wait(), 5)
    assert [f.subscription_id for f in await cache.followers_of(LEADER.upper().replace("0X", "0x"))] == ["sub_1"]

    await hotindex.upsert(r, _sub("sub_2", wallet="w_2"))
    await eventually(lambda: len(cache._by_leader.get(LEADER, ())) == 2)
    await hotindex.upsert(r, _sub("sub_1", fixed="40"))

    async def fixed_is_40() -> bool:
        [f1, _f2] = await cache.followers_of(LEADER)
        return f1.sizing.fixed_usd is not None and str(f1.sizing.fixed_usd) == "40"

    await eventually(fixed_is_40)
    await hotindex.upsert(r, _sub("sub_1", state=spb.SUBSCRIPTION_STATE_PAUSED))
    await hotindex.remove(r, LEADER, "sub_2")
    await eventually(lambda: LEADER not in cache._by_leader)
    reloads = cache.reloads

    # a change whose message was lost (version moved, no message): the periodic check reloads everything
    other = "0x" + "aa" * 20
    await r.hset(hotindex.leader_key(other), "sub_9", hotindex.encode(_sub("sub_9", leader=other)))
    await r.sadd(hotindex.LEADERS_KEY, other)
    await r.incr(hotindex.VERSION_KEY)
    await eventually(lambda: cache.reloads > reloads and other in cache._by_leader)
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
    assert LEADER not in cache._by_leader
