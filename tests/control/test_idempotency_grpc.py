"""Idempotent creates: Idempotency-Key metadata or requestId, replayed for 24 h under any configured token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from services.control.app import start
from services.control.audit import token_id
from services.control.config import Settings
from tests.control.conftest import AUTH, TOKEN, TOKEN_2, Stubs, leader, stubs_for, subscription, trigger
from tests.control.support import count, expect, query
from tradingtools.control.v1 import control_pb2 as pb

pytestmark = pytest.mark.integration

KEY = (("idempotency-key", "create-42"),)
AUTH_2 = (("authorization", f"Bearer {TOKEN_2}"),)


async def test_header_key_replays_the_first_response(stubs: Stubs, db_url: str) -> None:
    request = pb.CreateSubscriptionRequest(subscription=subscription())
    first = await stubs.subs.CreateSubscription(request, metadata=AUTH + KEY)
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=first.id), metadata=AUTH)
    replay = await stubs.subs.CreateSubscription(request, metadata=AUTH + KEY)
    assert replay == first  # the first response, not the current state
    assert count(db_url, "subscriptions") == 1 and count(db_url, "audit_log", "method = 'CreateSubscription'") == 1
    assert count(db_url, "idempotency_keys") == 1


async def test_body_request_id_replays(stubs: Stubs, db_url: str) -> None:
    body = subscription(request_id="rq-1")
    first = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=body), metadata=AUTH)
    again = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=body),
                                                metadata=(*AUTH, ("idempotency-key", "rq-1")))
    assert again == first and count(db_url, "subscriptions") == 1


async def test_key_reused_with_another_body(stubs: Stubs, db_url: str) -> None:
    await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                        metadata=AUTH + KEY)
    await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(5))), metadata=AUTH + KEY),
        grpc.StatusCode.FAILED_PRECONDITION, "idempotency key reused with a different request")
    await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(request_id="other")), metadata=AUTH + KEY),
        grpc.StatusCode.INVALID_ARGUMENT, "requestId: differs from the Idempotency-Key header")
    assert count(db_url, "subscriptions") == 1


async def test_a_subscription_key_replays_under_the_rotated_token(stubs: Stubs, db_url: str) -> None:
    request = pb.CreateSubscriptionRequest(subscription=subscription())
    first = await stubs.subs.CreateSubscription(request, metadata=AUTH + KEY)
    # Paused meanwhile: with the key scoped per token the retry would have created a second ACTIVE one.
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=first.id), metadata=AUTH)
    assert await stubs.subs.CreateSubscription(request, metadata=AUTH_2 + KEY) == first
    await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(5))), metadata=AUTH_2 + KEY),
        grpc.StatusCode.FAILED_PRECONDITION, "idempotency key reused with a different request")
    assert count(db_url, "subscriptions") == 1 and count(db_url, "audit_log", "method = 'CreateSubscription'") == 1
    assert query(db_url, "SELECT token_id FROM idempotency_keys") == [(token_id(TOKEN),)]


async def test_a_trigger_key_replays_under_the_rotated_token(stubs: Stubs, db_url: str) -> None:
    request = pb.CreateTriggerRequest(trigger=trigger())
    first = await stubs.triggers.CreateTrigger(request, metadata=AUTH + KEY)
    assert await stubs.triggers.CreateTrigger(request, metadata=AUTH_2 + KEY) == first
    body_key = pb.CreateTriggerRequest(trigger=trigger(request_id="t-2"))
    second = await stubs.triggers.CreateTrigger(body_key, metadata=AUTH_2)
    assert await stubs.triggers.CreateTrigger(body_key, metadata=AUTH) == second
    await expect(stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(trigger_price="0.3")),
                                              metadata=AUTH_2 + KEY),
                 grpc.StatusCode.FAILED_PRECONDITION, "idempotency key reused with a different request")
    assert count(db_url, "triggers") == 2 and count(db_url, "audit_log", "method = 'CreateTrigger'") == 2
    assert query(db_url, "SELECT key, token_id FROM idempotency_keys ORDER BY key") == [
        ("create-42", token_id(TOKEN)), ("t-2", token_id(TOKEN_2))]


async def test_concurrent_creates_under_two_tokens_create_once(stubs: Stubs, db_url: str) -> None:
    request = pb.CreateTriggerRequest(trigger=trigger())
    results = await asyncio.gather(*(stubs.triggers.CreateTrigger(request, metadata=auth + KEY)
                                     for auth in (AUTH, AUTH_2) * 3))
    assert len({r.id for r in results}) == 1 and count(db_url, "triggers") == 1


async def test_concurrent_replays_create_once(stubs: Stubs, db_url: str) -> None:
    request = pb.CreateSubscriptionRequest(subscription=subscription())
    results = await asyncio.gather(*(stubs.subs.CreateSubscription(request, metadata=AUTH + KEY) for _ in range(6)))
    assert len({r.id for r in results}) == 1
    assert count(db_url, "subscriptions") == 1 and count(db_url, "audit_log") == 1


async def test_failed_create_does_not_burn_the_key(stubs: Stubs, db_url: str) -> None:
    taken = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                                metadata=AUTH)
    request = pb.CreateSubscriptionRequest(subscription=subscription())
    await expect(stubs.subs.CreateSubscription(request, metadata=AUTH + KEY), grpc.StatusCode.ALREADY_EXISTS)
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=taken.id), metadata=AUTH)
    created = await stubs.subs.CreateSubscription(request, metadata=AUTH + KEY)
    assert created.id != taken.id and count(db_url, "idempotency_keys") == 1


async def test_trigger_create_replays(stubs: Stubs, db_url: str) -> None:
    request = pb.CreateTriggerRequest(trigger=trigger(request_id="t-1"))
    first = await stubs.triggers.CreateTrigger(request, metadata=AUTH)
    assert await stubs.triggers.CreateTrigger(request, metadata=AUTH) == first
    other = pb.CreateTriggerRequest(trigger=trigger(request_id="t-1", trigger_price="0.3"))
    await expect(stubs.triggers.CreateTrigger(other, metadata=AUTH), grpc.StatusCode.FAILED_PRECONDITION,
                 "idempotency key reused")
    # Same key on another method is another key.
    await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription(request_id="t-1")),
                                        metadata=AUTH)
    assert count(db_url, "triggers") == 1 and count(db_url, "idempotency_keys") == 2


async def test_replay_window_expires(settings_factory: Callable[..., Settings], db_url: str) -> None:
    clock = [datetime.now(UTC)]
    running = await start(settings_factory(idempotency_ttl_s=86_400.0), now=lambda: clock[0])
    stubs = stubs_for(running.port)
    try:
        request = pb.CreateTriggerRequest(trigger=trigger())
        first = await stubs.triggers.CreateTrigger(request, metadata=AUTH + KEY)
        clock[0] += timedelta(hours=23, minutes=59)
        assert await stubs.triggers.CreateTrigger(request, metadata=AUTH + KEY) == first
        clock[0] += timedelta(minutes=2)
        later = await stubs.triggers.CreateTrigger(request, metadata=AUTH + KEY)
        assert later.id != first.id and count(db_url, "triggers") == 2
    finally:
        await stubs.channel.close()
        await running.stop()
