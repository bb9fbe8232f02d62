"""A replica told to stop while calls wait to write their committed change to the index ends within its grace and a
small margin: the writes are given up (another replica's outbox sweep makes them) and nothing else holds the stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import redis.asyncio as aioredis

from services.control.app import RunningControl, start
from services.control.config import Settings
from tests.control.conftest import AUTH, LEADER, stubs_for, subscription
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb

pytestmark = pytest.mark.integration

GRACE_S = 0.5
MARGIN_S = 5.0  # far below the resync loop's wait after a failed write (600 s here): a stop waiting for it fails


@pytest.fixture
async def replica(settings_factory: Callable[..., Settings]) -> AsyncIterator[RunningControl]:
    """A replica whose resync loop, once woken by a failed index write, waits 600 s before it runs."""
    running = await start(settings_factory(grace_s=GRACE_S, index_retry_s=600.0))
    yield running  # each test stops it


async def _stops_in_time(running: RunningControl) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(running.stop()), GRACE_S + MARGIN_S)
    except TimeoutError:
        pytest.fail(f"the stop did not end within its grace ({GRACE_S} s) + {MARGIN_S} s")


async def _create_waiting_for_its_index_write(running: RunningControl) -> asyncio.Future[object]:
    """A create that has committed and is writing its index entry."""
    stubs = stubs_for(running.port)
    call = asyncio.ensure_future(stubs.subs.CreateSubscription(
        pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH))
    call.add_done_callback(lambda _: asyncio.ensure_future(stubs.channel.close(None)))
    await eventually(lambda: bool(running.sync._writes))
    return call


async def test_a_stop_ends_in_time_while_a_call_waits_for_its_leaders_index_lock(replica: RunningControl) -> None:
    lock = replica.sync._lock(LEADER)
    await lock.acquire()  # another writer of the leader (the resync, a sweep) holds it
    try:
        call = await _create_waiting_for_its_index_write(replica)
        await _stops_in_time(replica)
        with pytest.raises(grpc.aio.AioRpcError):  # cancelled by the stop
            await asyncio.wait_for(call, MARGIN_S)
    finally:
        lock.release()


async def test_a_stop_ends_in_time_while_redis_holds_the_index_write(
        replica: RunningControl, redis_client: aioredis.Redis) -> None:
    await redis_client.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
    try:
        call = await _create_waiting_for_its_index_write(replica)
        await _stops_in_time(replica)
        with pytest.raises(grpc.aio.AioRpcError):  # cancelled by the stop
            await asyncio.wait_for(call, MARGIN_S)
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")


async def test_a_stop_ends_in_time_when_its_resync_loop_is_asked_for_a_pass_as_it_is_cancelled(
        replica: RunningControl) -> None:
    async def failed_write_asks_for_a_resync() -> None:
        # as a call the stop cancelled does when its shutdown completes at once: the hooks run in reverse order, so
        # this runs right before the service's own clean-up cancels the loop
        replica.sync.mark_dirty()

    replica.server.on_stop(failed_write_asks_for_a_resync)
    await _stops_in_time(replica)
