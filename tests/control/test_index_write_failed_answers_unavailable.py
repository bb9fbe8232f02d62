"""A change committed whose index write then fails is answered UNAVAILABLE (503), not OK: a caller who saw OK counts
on the index (a pause or a stop: no new copies). The change stays committed; the retry (the same call, idempotent)
writes the index and answers OK. Real Redis made to refuse writes while it still answers PING
(``min-replicas-to-write`` without replicas)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.control.app import RunningControl, start
from services.control.config import Settings
from tests.control.conftest import AUTH, LEADER, Stubs, stubs_for, subscription
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

Call = Callable[[Stubs, str], Awaitable[Any]]


@pytest.fixture
async def replica(settings_factory: Callable[..., Settings]) -> AsyncIterator[RunningControl]:
    """A replica whose resync loop, once woken by a failed index write, waits 600 s: only a call writes the index."""
    running = await start(settings_factory(index_retry_s=600.0))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def stubs(replica: RunningControl) -> AsyncIterator[Stubs]:
    s = stubs_for(replica.port)
    try:
        yield s
    finally:
        await s.channel.close(None)


@pytest.fixture
async def refusing_writes(redis_client: aioredis.Redis) -> AsyncIterator[Callable[[bool], Awaitable[None]]]:
    """Switch Redis to refusing writes (NOREPLICAS) and back; always back at the end."""
    async def refuse(on: bool) -> None:
        await redis_client.config_set("min-replicas-to-write", 1 if on else 0)
    try:
        yield refuse
    finally:
        await refuse(False)


async def _indexed(redis_client: aioredis.Redis) -> list[int]:
    return [s.state for s in await hotindex.subscriptions_of(redis_client, LEADER)]


async def _pause(stubs: Stubs, sid: str) -> Any:
    return await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sid, reason="vacation"), metadata=AUTH)


async def _stop(stubs: Stubs, sid: str) -> Any:
    return await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sid), metadata=AUTH)


async def _resume(stubs: Stubs, sid: str) -> Any:
    return await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sid), metadata=AUTH)


@pytest.mark.parametrize(("call", "state"), [(_pause, spb.SUBSCRIPTION_STATE_PAUSED),
                                             (_stop, spb.SUBSCRIPTION_STATE_STOPPED)])
async def test_a_pause_or_stop_whose_index_write_failed_is_not_answered_ok(
        stubs: Stubs, redis_client: aioredis.Redis, refusing_writes: Callable[[bool], Awaitable[None]],
        call: Call, state: int) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    assert await _indexed(redis_client) == [spb.SUBSCRIPTION_STATE_ACTIVE]
    await refusing_writes(True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(stubs, sub.id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (err.value.details() or "").startswith("redis unavailable")
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert got.state == state  # committed
    assert await _indexed(redis_client) == [spb.SUBSCRIPTION_STATE_ACTIVE]  # still copied: an OK would have lied
    # the retry while Redis still refuses: the same answer
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await call(stubs, sub.id)
    assert again.value.code() == grpc.StatusCode.UNAVAILABLE
    await refusing_writes(False)
    await call(stubs, sub.id)  # the retry once Redis takes writes: OK, and the index is in line at the answer
    assert await _indexed(redis_client) == []


async def test_a_resume_whose_index_write_failed_is_not_answered_ok(
        stubs: Stubs, redis_client: aioredis.Redis, refusing_writes: Callable[[bool], Awaitable[None]]) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    await _pause(stubs, sub.id)
    assert await _indexed(redis_client) == []
    await refusing_writes(True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _resume(stubs, sub.id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await refusing_writes(False)
    resumed = await _resume(stubs, sub.id)
    assert resumed.state == spb.SUBSCRIPTION_STATE_ACTIVE
    assert await _indexed(redis_client) == [spb.SUBSCRIPTION_STATE_ACTIVE]
