"""The hot index after a commit whatever happens to the call (a deadline or disconnect between its commit and
its index write, then perhaps a retry) and whatever another replica writes meanwhile: after a 200 the index
holds the row's newest version."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.control.app import RunningControl, start
from services.control.config import Settings
from tests.control.conftest import AUTH, LEADER, Stubs, stubs_for, subscription
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


async def _cancelled_after_commit(control: RunningControl, call: Callable[[float], Awaitable[Any]]) -> None:
    """Run ``call`` with a short deadline while the leader's index stripe is busy, so the deadline hits after
    the commit, while the call waits to write the index."""
    lock = control.sync._lock(LEADER)
    await lock.acquire()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.3)  # the server cancels the handler
    finally:
        lock.release()


async def _indexed(redis_client: aioredis.Redis) -> list[spb.Subscription]:
    return await hotindex.subscriptions_of(redis_client, LEADER)


async def test_a_pause_cancelled_after_its_commit_still_leaves_the_index(control: RunningControl, stubs: Stubs,
                                                                        redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    await _cancelled_after_commit(control, lambda t: stubs.subs.PauseSubscription(
        pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH, timeout=t))
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert got.state == spb.SUBSCRIPTION_STATE_PAUSED  # committed
    assert await eventually(lambda: _empty(redis_client))  # the write went on without its caller
    again = await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert again.state == spb.SUBSCRIPTION_STATE_PAUSED and await _indexed(redis_client) == []


async def _empty(redis_client: aioredis.Redis) -> bool:
    return await _indexed(redis_client) == []


async def test_a_patch_cancelled_after_its_commit_reaches_the_index(control: RunningControl, stubs: Stubs,
                                                                   redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    patch = pb.UpdateSubscriptionRequest(id=sub.id, subscription=spb.Subscription(sizing=spb.Sizing(ratio="0.5")))
    await _cancelled_after_commit(control, lambda t: stubs.subs.UpdateSubscription(patch, metadata=AUTH, timeout=t))

    async def ratio() -> str:
        [indexed] = await _indexed(redis_client)
        return indexed.sizing.ratio
    assert await eventually(lambda: _is(ratio, "0.5"))
    again = await stubs.subs.UpdateSubscription(patch, metadata=AUTH)  # the retry: a no-op that writes it again
    assert again.sizing.ratio == "0.5" and await ratio() == "0.5"


async def _is(get: Callable[[], Awaitable[Any]], expected: Any) -> bool:
    return await get() == expected


async def test_a_create_cancelled_after_its_commit_copies(control: RunningControl, stubs: Stubs,
                                                         redis_client: aioredis.Redis) -> None:
    req = pb.CreateSubscriptionRequest(subscription=subscription(request_id="create-1"))
    await _cancelled_after_commit(control, lambda t: stubs.subs.CreateSubscription(req, metadata=AUTH, timeout=t))
    sub = await stubs.subs.CreateSubscription(req, metadata=AUTH)  # the retry with the same key: replayed
    assert sub.state == spb.SUBSCRIPTION_STATE_ACTIVE
    assert [s.id for s in await _indexed(redis_client)] == [sub.id]


async def test_a_replayed_create_writes_the_row_as_it_is_now(control: RunningControl, stubs: Stubs,
                                                            redis_client: aioredis.Redis) -> None:
    """The stored answer of a create is its first version: the index gets the row's newest one."""
    req = pb.CreateSubscriptionRequest(subscription=subscription(request_id="create-2"))
    sub = await stubs.subs.CreateSubscription(req, metadata=AUTH)
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
    replay = await stubs.subs.CreateSubscription(req, metadata=AUTH)
    assert replay.state == spb.SUBSCRIPTION_STATE_ACTIVE  # the first answer, replayed
    assert await _indexed(redis_client) == []  # PAUSED: not copied


@pytest.mark.parametrize("late", ["patch", "pause"])
async def test_an_older_version_written_late_by_another_replica_is_refused(
        control: RunningControl, stubs: Stubs, settings_factory: Callable[..., Settings],
        redis_client: aioredis.Redis, late: str) -> None:
    other = await start(settings_factory())
    b = stubs_for(other.port)
    try:
        sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                  metadata=AUTH)
        lock = other.sync._lock(LEADER)  # replica B's index write is late
        await lock.acquire()
        if late == "patch":
            first = asyncio.ensure_future(b.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
                id=sub.id, subscription=spb.Subscription(sizing=spb.Sizing(ratio="0.5"))), metadata=AUTH))
        else:
            first = asyncio.ensure_future(b.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id),
                                                                   metadata=AUTH))

        async def committed() -> bool:
            got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
            return got.sizing.ratio == "0.5" if late == "patch" else got.state == spb.SUBSCRIPTION_STATE_PAUSED
        await eventually(committed)
        if late == "patch":  # replica A pauses after B's PATCH: not copied
            await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
        else:  # replica A resumes after B's pause: copied
            await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
        lock.release()
        await first
        indexed = [s.id for s in await _indexed(redis_client)]
        assert indexed == ([] if late == "patch" else [sub.id])
        # and the resync of either replica agrees
        await other.sync.resync()
        await control.sync.resync()
        assert [s.id for s in await _indexed(redis_client)] == indexed
    finally:
        await b.channel.close()
        await other.stop()


async def test_the_active_time_is_the_creation_or_the_last_resume(stubs: Stubs,
                                                                redis_client: aioredis.Redis) -> None:
    """What the router holds a leader's BUY against (TRADE_BEFORE_ACTIVE): a PATCH does not move it."""
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    assert sub.active_time == sub.create_time
    patched = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(sizing=spb.Sizing(ratio="0.5"))), metadata=AUTH)
    assert patched.active_time == sub.active_time and patched.update_time != sub.update_time
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
    resumed = await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert resumed.active_time.ToNanoseconds() > sub.active_time.ToNanoseconds()
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    [indexed] = await _indexed(redis_client)
    assert got.active_time == resumed.active_time == indexed.active_time
    live = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(mode=cpb.EXECUTION_MODE_LIVE)), metadata=AUTH)
    assert live.active_time.ToNanoseconds() > resumed.active_time.ToNanoseconds()  # a switch to real money
