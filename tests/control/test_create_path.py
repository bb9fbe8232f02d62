"""The create's one-statement write (row + audit row + idempotency claim) and the index string it
reuses, against real gRPC, PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from psycopg import pq

from common import hotindex
from services.control import sub_repo
from services.control.app import start
from services.control.codec import audit_subscription, index_json
from services.control.config import Settings
from services.control.db import create_pool
from services.control.hotsync import index_copy
from tests.control.conftest import AUTH, LEADER, Stubs, stubs_for, subscription
from tests.control.support import count, expect, query
from tests.test_pipelined_transaction import exchanges
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

KEY = (("idempotency-key", "create-path-1"),)


def test_index_json_is_what_hotindex_encodes() -> None:
    sub = subscription(label="déjà vu \u2603")
    sub.id = "sub_1"
    sub.state = spb.SUBSCRIPTION_STATE_ACTIVE
    sub.create_time.FromSeconds(1_700_000_000)
    sub.stats.copied = 5
    assert index_json(audit_subscription(sub)) == hotindex.encode(index_copy(sub))


@pytest.mark.integration
async def test_keyed_create_writes_row_audit_and_replay_together(stubs: Stubs, db_url: str,
                                                                 redis_client: aioredis.Redis) -> None:
    request = pb.CreateSubscriptionRequest(subscription=subscription())
    created = await stubs.subs.CreateSubscription(request, metadata=AUTH + KEY)
    [(response,)] = query(db_url, "SELECT response FROM idempotency_keys")
    assert spb.Subscription.FromString(bytes(response)) == created
    [(after, method)] = query(db_url, "SELECT after, method FROM audit_log")
    assert after == audit_subscription(created) and method == "CreateSubscription"
    assert await redis_client.hget(hotindex.leader_key(LEADER), created.id) == hotindex.encode(index_copy(created))
    assert await stubs.subs.CreateSubscription(request, metadata=AUTH + KEY) == created
    assert count(db_url, "subscriptions") == 1 and count(db_url, "audit_log") == 1


@pytest.mark.integration
async def test_a_refused_create_leaves_no_audit_row_and_no_key(stubs: Stubs, db_url: str) -> None:
    await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                               metadata=AUTH + KEY), grpc.StatusCode.ALREADY_EXISTS)
    assert count(db_url, "audit_log") == 1 and count(db_url, "idempotency_keys") == 0


@pytest.mark.integration
async def test_an_expired_key_creates_again_through_the_transactional_path(
        settings_factory: Callable[..., Settings], db_url: str) -> None:
    clock = [datetime.now(UTC)]
    running = await start(settings_factory(idempotency_ttl_s=3600.0), now=lambda: clock[0])
    stubs = stubs_for(running.port)
    try:
        first = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                    metadata=AUTH + KEY)
        await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=first.id), metadata=AUTH)
        clock[0] += timedelta(hours=2)
        again = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                    metadata=AUTH + KEY)
        assert again.id != first.id and again.state == spb.SUBSCRIPTION_STATE_ACTIVE
        [(response,)] = query(db_url, "SELECT response FROM idempotency_keys")
        assert spb.Subscription.FromString(bytes(response)) == again
        assert count(db_url, "audit_log", "method = 'CreateSubscription'") == 2
        assert await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                   metadata=AUTH + KEY) == again
    finally:
        await stubs.channel.close(None)
        await running.stop()


@pytest.mark.integration
@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "idempotency key"])
async def test_a_create_is_one_exchange_with_postgresql(db_url: str, tmp_path: Path, keyed: bool) -> None:
    """The wallet's mode lock, the create statement and COMMIT leave together."""
    pool = await create_pool(db_url, max_size=1, acquire_timeout_s=2, statement_timeout_s=2)
    sub = subscription()
    sub.id, sub.state = "sub_1", spb.SUBSCRIPTION_STATE_ACTIVE
    sub.create_time.GetCurrentTime()
    sub.update_time.GetCurrentTime()
    claim = sub_repo.IdempotencyClaim("k-1", "digest", b"response") if keyed else None
    trace_file = tmp_path / "libpq.trace"
    try:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")  # the connection's own set-up is not the create's
            with trace_file.open("w") as out:
                conn.pgconn.trace(out.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
                try:
                    done = await sub_repo.insert_created(conn, sub, audit_subscription(sub), token_id="t",
                                                         method="CreateSubscription", request_id="r", claim=claim)
                finally:
                    conn.pgconn.untrace()
    finally:
        await pool.close()
    assert done == sub_repo.Created(True, None)
    assert exchanges(trace_file.read_text()) == 1
    assert count(db_url, "subscriptions") == 1 and count(db_url, "idempotency_keys") == int(keyed)
