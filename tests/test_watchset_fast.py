"""A watch-set change on the pipelined connection (``common.watchset``) writes and announces exactly what the
redis-py MULTI of ``common.marketstate.change_watch_set`` does, and guard's watch publisher on it keeps the set
(real Redis)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from common.fastredis import FastRedis
from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, WATCH_TRIGGERS, change_watch_set, parse_watch_change
from common.watchset import change_watch_set as change_watch_set_fast
from services.guard.adapters.publishers import WatchPublisher
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec

pytestmark = pytest.mark.integration


def _stop(tid: str, asset_id: str) -> TriggerSpec:
    return TriggerSpec(tid, asset_id, Kind.STOP_LOSS, trigger_price=Decimal("0.40"))


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
    engine = Engine()
    engine.upsert(_stop("s1", "a"))
    engine.upsert(_stop("s2", "b"))
    try:
        pub = WatchPublisher(client, lambda: engine, fast=fast)
        await pub.step()
        engine.remove("s1")
        engine.upsert(_stop("s3", "c"))
        await pub.step()
        assert await client.smembers(WATCH_TRIGGERS) == {"b", "c"}
    finally:
        fast.close()
        await client.aclose()


async def test_a_command_redis_refuses_inside_the_transaction_raises(redis_url: str) -> None:
    """An error reply inside ``EXEC``'s reply (the key holds a string: WRONGTYPE) is not a success: the caller keeps
    the change to send again rather than believing the set holds it."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    fast = FastRedis(redis_url)
    try:
        await client.set(WATCH_POSITIONS, "not a set")
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await change_watch_set_fast(fast, WATCH_POSITIONS, {"a"}, set())
    finally:
        await client.delete(WATCH_POSITIONS)
        fast.close()
        await client.aclose()
