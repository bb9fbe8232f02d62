"""A watch-set change on the pipelined connection (``common.watchset``) writes and announces exactly what the
redis-py MULTI of ``common.marketstate.change_watch_set`` does, and guard's watch publisher on it keeps the set
(real Redis)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from common.fastredis import FastRedis
from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, WATCH_TRIGGERS, change_watch_set, parse_watch_change
from common.watchset import change_watch_set as change_watch_set_fast
from services.guard.adapters.publishers import WatchPublisher

pytestmark = pytest.mark.integration


async def _announced(client: aioredis.Redis, change: Any) -> tuple[set[str], list[Any]]:
    pubsub = client.pubsub()
    await pubsub.subscribe(WATCH_CHANNEL)
    try:
        await pubsub.get_message(timeout=1.0)  # the confirmation
        await change()
        got = [await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)]
        return await client.smembers(WATCH_POSITIONS), [m["data"] for m in got if m is not None]
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize(("added", "removed"), [({"a", "b"}, set()), (set(), {"a"}), ({"c"}, {"b"}), (set(), set())])
async def test_the_fast_change_equals_the_redis_py_one(redis_url: str, added: set[str], removed: set[str]) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    fast = FastRedis(redis_url)
    try:
        results = []
        for change in (lambda: change_watch_set(client, WATCH_POSITIONS, added, removed),
                       lambda: change_watch_set_fast(fast, WATCH_POSITIONS, added, removed)):
            await client.delete(WATCH_POSITIONS)
            await client.sadd(WATCH_POSITIONS, "a", "b")
            results.append(await _announced(client, change))
        assert results[0] == results[1]
        assert parse_watch_change(results[1][1][0]) is not None
    finally:
        fast.close()
        await client.aclose()


async def test_guards_watch_publisher_on_the_fast_connection(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    fast = FastRedis(redis_url)
    assets = {"a", "b"}
    try:
        pub = WatchPublisher(client, lambda: set(assets), fast=fast)
        await pub.step()
        assets.discard("a")
        assets.add("c")
        await pub.step()
        assert await client.smembers(WATCH_TRIGGERS) == {"b", "c"}
    finally:
        fast.close()
        await client.aclose()
