"""A change committed by a replica that stops (or dies) before its index write reaches the index within seconds:
another replica picks it up, not only its periodic full pass (every 10 minutes by default)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.control.app import RunningControl, start
from services.control.config import Settings
from tests.control.conftest import AUTH, LEADER, Stubs, stubs_for, subscription
from tests.control.support import count
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture
async def steady(settings_factory: Callable[..., Settings]) -> AsyncIterator[RunningControl]:
    """A replica checking its index at the production periods (every 30 s, a full pass every 600 s)."""
    running = await start(settings_factory(index_resync_s=30.0, index_full_resync_s=600.0))
    try:
        yield running
    finally:
        await running.stop()


async def _indexed(redis_client: aioredis.Redis) -> list[str]:
    return sorted(s.id for s in await hotindex.subscriptions_of(redis_client, LEADER))


async def _dies_after_commit(replica: RunningControl, call: asyncio.Future[object]) -> None:
    """``replica`` goes away while ``call`` has committed and waits to write the index: its pending write never runs
    (as when the process is killed), and neither does its resync (``index_retry_s`` is long)."""
    for write in list(replica.sync._writes):
        write.cancel()
    call.cancel()
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        await call
    await replica.stop()


@pytest.mark.parametrize("change", ["create", "pause"])
async def test_a_change_whose_replica_stopped_before_its_index_write_reaches_the_index_within_seconds(
        steady: RunningControl, settings_factory: Callable[..., Settings], redis_client: aioredis.Redis,
        change: str) -> None:
    a = stubs_for(steady.port)
    other = await start(settings_factory(index_retry_s=600.0))
    b: Stubs = stubs_for(other.port)
    lock = other.sync._lock(LEADER)
    died = False
    try:
        sub = await a.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
        assert await _indexed(redis_client) == [sub.id]
        await lock.acquire()  # replica B commits, then waits to write the index
        if change == "create":
            await a.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
            assert await _indexed(redis_client) == []
            call = asyncio.ensure_future(b.subs.CreateSubscription(pb.CreateSubscriptionRequest(
                subscription=subscription(label="second")), metadata=AUTH))

            async def committed() -> list[str]:
                page = await a.subs.ListSubscriptions(pb.ListSubscriptionsRequest(
                    follower_proxy=subscription().follower_proxy), metadata=AUTH)
                return [s.id for s in page.subscriptions if s.label == "second"]
            wanted: str = (await eventually(committed))[0]
            expected = [wanted]  # a missed copy until the index has it
        else:
            call = asyncio.ensure_future(b.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id),
                                                                  metadata=AUTH))

            async def committed() -> list[str]:
                got = await a.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
                return [got.paused_reason] if got.paused_reason else []
            await eventually(committed)
            expected = []  # an unwanted copy while the index still has it
        assert await _indexed(redis_client) != expected  # committed, not written yet
        await _dies_after_commit(other, call)
        died = True

        async def healed() -> bool:
            return await _indexed(redis_client) == expected
        await eventually(healed, timeout_s=10.0)
    finally:
        if lock.locked():
            lock.release()
        await a.channel.close()
        await b.channel.close()
        if not died:
            await other.stop()


async def test_the_sweep_rewrites_nothing_the_writer_wrote_in_time_and_empties_its_queue(
        steady: RunningControl, redis_client: aioredis.Redis, db_url: str) -> None:
    a = stubs_for(steady.port)
    try:
        sub = await a.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
        await a.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
        version = await hotindex.version(redis_client)
        await eventually(lambda: count(db_url, "subscription_index_outbox") == 0)
        assert await hotindex.version(redis_client) == version  # no second invalidation: readers reload nothing
        assert await _indexed(redis_client) == []
    finally:
        await a.channel.close()
