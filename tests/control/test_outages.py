"""PostgreSQL and Redis outages: UNAVAILABLE with a message, nothing half-written, recovery without a
restart. Each test runs its own throwaway server that it stops and restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from common import hotindex
from common.embedded import free_port, start_postgres, start_redis, stop_pid, stop_postgres
from common.grpcserver import start_server
from services.control.app import start
from services.control.hotsync import IndexNotWritten
from tests.control.conftest import AUTH, LEADER, make_settings, stubs_for, subscription, trigger
from tests.control.support import count, expect
from tests.helpers import INTERNAL, eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def _ready(stubs: object) -> bool:
    try:
        await stubs.probes.GetReady(pb.GetReadyRequest())  # type: ignore[attr-defined]
    except grpc.aio.AioRpcError:
        return False
    return True


async def test_redis_outage_and_recovery(tmp_path: Path, db_url: str) -> None:
    workdir = tmp_path / "redis"
    url, pid = start_redis(workdir, durable=False)
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    running = await start(make_settings(db_url, url, index_retry_s=0.1))
    stubs = stubs_for(running.port)
    try:
        sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                  metadata=AUTH)
        stop_pid(pid)
        await expect(stubs.probes.GetReady(pb.GetReadyRequest()), UNAVAILABLE, "not ready: postgres ok, redis (")
        other = subscription(leader_proxy="0x" + "7" * 40)
        await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=other), metadata=AUTH),
                     UNAVAILABLE, "redis unavailable:")
        await expect(stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH),
                     UNAVAILABLE, "redis unavailable:")
        await expect(stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger()), metadata=AUTH),
                     UNAVAILABLE, "redis unavailable:")
        got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)  # reads work
        assert got.state == spb.SUBSCRIPTION_STATE_ACTIVE
        assert count(db_url, "subscriptions") == 1 and count(db_url, "triggers") == 0
        assert count(db_url, "audit_log") == 1
        # A commit whose index update fails fails the call UNAVAILABLE (committed; a retry or the resync heals it).
        with pytest.raises(IndexNotWritten):
            await running.sync.subscription_changed(sub, 1)
        assert running.sync.dirty

        start_redis(workdir, port=port, durable=False)  # empty: everything it held is gone
        await eventually(lambda: _ready(stubs), timeout_s=10)
        redis = running.redis
        await eventually(lambda: hotindex.subscriptions_of(redis, LEADER), timeout_s=10)
        created = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=other), metadata=AUTH)
        assert created.state == spb.SUBSCRIPTION_STATE_ACTIVE
    finally:
        await stubs.channel.close()
        await running.stop()
        pidfile = workdir / "redis.pid"
        if pidfile.exists():
            stop_pid(int(pidfile.read_text().strip()))


async def test_postgres_outage_and_recovery(tmp_path: Path, redis_url: str) -> None:
    import pgserver

    pgdata = tmp_path / "pg" / "data"
    pgdata.parent.mkdir(parents=True)
    url = start_postgres(pgdata)
    running = await start(make_settings(url, redis_url, db_timeout_s=0.5, ready_timeout_s=1.0))
    stubs = stubs_for(running.port)
    try:
        sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                  metadata=AUTH)
        stop_postgres(pgdata)
        await expect(stubs.probes.GetReady(pb.GetReadyRequest()), UNAVAILABLE, "not ready: postgres (")
        other = subscription(leader_proxy="0x" + "7" * 40)
        await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=other), metadata=AUTH),
                     UNAVAILABLE, "postgres unavailable")
        await expect(stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH),
                     UNAVAILABLE, "postgres unavailable")
        await expect(stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH),
                     UNAVAILABLE, "postgres unavailable")
        assert (await stubs.probes.GetHealth(pb.GetHealthRequest())).status == "SERVING"

        pgserver.get_server(pgdata, cleanup_mode=None).ensure_postgres_running()
        await eventually(lambda: _ready(stubs), timeout_s=15)
        got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
        assert got.state == spb.SUBSCRIPTION_STATE_ACTIVE  # the failed pause wrote nothing
        listed = await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(follower_proxy=sub.follower_proxy),
                                                    metadata=AUTH)
        assert [s.id for s in listed.subscriptions] == [sub.id]  # the failed create wrote nothing
        assert [s.id for s in await hotindex.subscriptions_of(running.redis, LEADER)] == [sub.id]
        await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=other), metadata=AUTH)
    finally:
        await stubs.channel.close()
        await running.stop()
        stop_postgres(pgdata)


@pytest.fixture
async def pipeline_health() -> AsyncIterator[int]:
    """A real gRPC server with only health (stands in for a pipeline service)."""
    server = await start_server("127.0.0.1", 0, lambda s: (), security=INTERNAL)
    try:
        yield server.port
    finally:
        await server.stop(0)


async def test_ready_checks_configured_pipeline_services(db_url: str, redis_url: str, pipeline_health: int) -> None:
    dead = f"127.0.0.1:{free_port()}"
    running = await start(make_settings(db_url, redis_url, ready_timeout_s=0.5,
                                        ready_services=(("router", f"127.0.0.1:{pipeline_health}"),
                                                        ("guard", dead))))
    stubs = stubs_for(running.port)
    try:
        await expect(stubs.probes.GetReady(pb.GetReadyRequest()), UNAVAILABLE,
                     "not ready: postgres ok, redis ok, router ok, guard (")
    finally:
        await stubs.channel.close()
        await running.stop()
