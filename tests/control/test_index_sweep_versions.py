"""The outbox sweep writes a subscription as it read it; a newer version another replica committed and wrote while the
sweep held the older row stands: the index refuses the older one, whichever way the change went."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.control import index_outbox, sub_repo
from services.control.app import RunningControl, start
from services.control.config import Settings
from tests.control.conftest import AUTH, LEADER, stubs_for, subscription
from tests.control.support import execute
from tradingtools.control.v1 import control_pb2 as pb

pytestmark = pytest.mark.integration

# a change committed behind the index (its writer gone before writing it), and the newer change made meanwhile
OLDER = {
    "paused then": "UPDATE subscriptions SET state = 'PAUSED', paused_reason = 'p', version = version + 1"
                   " WHERE id = %s",
    "relabelled then": "UPDATE subscriptions SET label = 'older', version = version + 1 WHERE id = %s",
}


@pytest.fixture
async def quiet(settings_factory: Callable[..., Settings]) -> AsyncIterator[RunningControl]:
    """A replica whose own loop neither checks nor sweeps during the test."""
    running = await start(settings_factory(index_resync_s=3600.0, index_sweep_s=3600.0))
    try:
        yield running
    finally:
        await running.stop()


@pytest.mark.parametrize("older", OLDER)
async def test_a_sweep_holding_an_older_row_leaves_the_newer_write_in_the_index(
        quiet: RunningControl, redis_client: aioredis.Redis, db_url: str, older: str) -> None:
    stubs = stubs_for(quiet.port)
    try:
        sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                  metadata=AUTH)
        execute(db_url, OLDER[older], (sub.id,))
        newer_active = older == "paused then"

        async def newer_write_first(stored: sub_repo.Stored) -> bool:
            """Another replica commits and writes the next version between the sweep's read and its write."""
            if newer_active:
                await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
            else:
                await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
            return await quiet.sync._rewrite(stored)

        written = await index_outbox.sweep(quiet.sync.db, quiet.sync.redis, newer_write_first, grace_s=0)
        assert written == 0
        indexed = [s.id for s in await hotindex.subscriptions_of(redis_client, LEADER)]
        assert indexed == ([sub.id] if newer_active else [])
        assert await redis_client.hget(hotindex.ROW_VERSIONS_KEY, sub.id) == "3"
    finally:
        await stubs.channel.close(None)
