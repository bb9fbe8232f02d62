"""The hot index shared by control, ingest and router."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from common import hotindex
from tests.helpers import eventually
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


def _sub(sid: str, leader: str, state: int = spb.SUBSCRIPTION_STATE_ACTIVE) -> spb.Subscription:
    return spb.Subscription(id=sid, leader_proxy=leader, follower_proxy="0x" + "1" * 40, state=state,  # type: ignore[arg-type]
                            sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25"))


async def test_upsert_remove_and_invalidation(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    pubsub = client.pubsub()
    await pubsub.subscribe(hotindex.CHANNEL)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    leader = "0x" + "A" * 40

    v1 = await hotindex.upsert(client, _sub("sub_1", leader))
    assert await hotindex.leaders(client) == {leader.lower()}
    [stored] = await hotindex.subscriptions_of(client, leader)
    assert stored.sizing.fixed_usd == "25"

    msg = await eventually(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1))
    change = hotindex.IndexChange.parse(msg["data"])
    assert (change.leader, change.op, change.version) == (leader.lower(), "upsert", v1)

    await hotindex.upsert(client, _sub("sub_1", leader, spb.SUBSCRIPTION_STATE_PAUSED))
    assert await hotindex.leaders(client) == set()
    assert await hotindex.subscriptions_of(client, leader) == []
    assert await hotindex.version(client) == v1 + 1
    await pubsub.aclose()
    await client.aclose()
    await asyncio.sleep(0)


@pytest.mark.parametrize(("writes", "indexed"), [
    # (state, row version) in the order they reach Redis
    ([("ACTIVE", 1), ("PAUSED", 3), ("ACTIVE", 2)], False),  # an older upsert after a newer remove: refused
    ([("ACTIVE", 4), ("PAUSED", 3)], True),  # an older remove after a newer upsert: refused
    ([("ACTIVE", 2), ("ACTIVE", 2)], True),  # the same version again: written again
    ([("PAUSED", 2), ("ACTIVE", None)], True),  # no version: not checked
])
async def test_a_write_older_than_the_row_version_held_is_refused(
        redis_url: str, writes: list[tuple[str, int | None]], indexed: bool) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    leader = "0x" + "B" * 40
    states = {"ACTIVE": spb.SUBSCRIPTION_STATE_ACTIVE, "PAUSED": spb.SUBSCRIPTION_STATE_PAUSED}
    held = 0
    for state, version in writes:
        got = await hotindex.upsert(client, _sub("sub_9", leader, states[state]), version)
        assert (got == hotindex.REFUSED) == (version is not None and version < held)
        held = max(held, version or 0)
    assert [s.id for s in await hotindex.subscriptions_of(client, leader)] == (["sub_9"] if indexed else [])
    assert (leader.lower() in await hotindex.leaders(client)) == indexed
    await client.aclose()
