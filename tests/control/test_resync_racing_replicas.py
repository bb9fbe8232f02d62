"""A resync racing another replica's writes leaves every ACTIVE subscription's leader followed: ingest follows
exactly the leaders of ``tt:leaders`` and the router reloads only their hashes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.control import sub_repo
from services.control.app import RunningControl, start
from services.control.config import Settings
from services.control.hotsync import index_copy
from tests.control.conftest import AUTH, LEADER, stubs_for, subscription
from tests.control.support import execute
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


async def test_a_resume_by_another_replica_during_a_resync_keeps_its_leader_followed(
        control: RunningControl, settings_factory: Callable[..., Settings], redis_client: aioredis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    other = await start(settings_factory())
    b = stubs_for(other.port)
    try:
        # created through replica B: replica A's resync has no expectation of it and re-reads its leader
        sub = await b.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
        read = sub_repo.active_of_leader

        async def paused_while_read(conn: Any, leader: str) -> list[sub_repo.Stored]:
            """B pauses the subscription before A's read of the leader and resumes it right after."""
            await b.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
            rows = await read(conn, leader)
            await b.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
            return rows

        monkeypatch.setattr(sub_repo, "active_of_leader", paused_while_read)
        await control.sync.resync()
        monkeypatch.setattr(sub_repo, "active_of_leader", read)

        assert [s.id for s in await hotindex.subscriptions_of(redis_client, LEADER)] == [sub.id]
        assert await hotindex.leaders(redis_client) == {LEADER}  # ingest still follows the leader
    finally:
        await b.channel.close(None)
        await other.stop()


async def test_a_resync_after_postgresql_went_back_in_time_makes_the_index_equal_to_it(
        control: RunningControl, redis_client: aioredis.Redis, db_url: str) -> None:
    """PostgreSQL restored from a backup (or failed over to a standby that missed the last commits) holds older
    row versions than the ones the index was written at: the resync still makes the index equal to PostgreSQL."""
    b = stubs_for(control.port)
    try:
        sub = await b.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
        await b.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)  # the backup: v2
        await b.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)  # v3, lost
        execute(db_url, "UPDATE subscriptions SET state = 'PAUSED', paused_reason = 'PAUSED_BY_USER', version = 2"
                        " WHERE id = %s", (sub.id,))
        await control.sync.resync()
        assert await hotindex.subscriptions_of(redis_client, LEADER) == []  # PAUSED: not copied
        assert await hotindex.leaders(redis_client) == set()
        await b.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)  # v3 again
        patched = await b.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(  # v4
            id=sub.id, subscription=spb.Subscription(sizing=spb.Sizing(ratio="0.5"))), metadata=AUTH)
        assert await hotindex.subscriptions_of(redis_client, LEADER) == [index_copy(patched)]
    finally:
        await b.channel.close(None)
