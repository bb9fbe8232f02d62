"""Guard hears of every committed trigger change on tt:triggers:changed: also of one whose call was cancelled
after its COMMIT (a client deadline, a dropped stream), by the resync loop and by the client's retry, which
answers 200 without changing anything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from services.control.app import RunningControl, start
from services.control.config import Settings
from services.control.trigger_notices import TRIGGERS_CHANNEL, TRIGGERS_VERSION_KEY
from services.guard.trigger_sync import TriggerSync
from tests.control.conftest import AUTH, Stubs, stubs_for, subscription, trigger
from tests.control.support import query
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration


class Heard:
    """The notices guard hears."""

    def __init__(self, pubsub: Any) -> None:
        self.pubsub = pubsub

    async def next(self) -> tuple[str, str]:
        """The next notice: (trigger id, op)."""
        msg = await eventually(lambda: self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1),
                               timeout_s=5, message="no trigger notice")
        data = orjson.loads(msg["data"])
        return data["triggerId"], data["op"]


@pytest.fixture
async def heard(redis_client: aioredis.Redis) -> AsyncIterator[Heard]:
    """Listening on tt:triggers:changed."""
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(TRIGGERS_CHANNEL)
    await pubsub.get_message(timeout=1)
    try:
        yield Heard(pubsub)
    finally:
        await pubsub.aclose()


async def cancelled_after_commit(control: RunningControl, monkeypatch: pytest.MonkeyPatch,
                                 call: Awaitable[object]) -> None:
    """Run ``call`` (deadline 0.3 s) while every transaction commits and its COMMIT's reply then takes 1 s: the
    client gives up, the server cancels the call after the commit."""
    original = control.db.transaction

    @asynccontextmanager
    async def transaction() -> AsyncIterator[object]:
        async with original() as conn:
            yield conn
        await asyncio.sleep(1.0)

    monkeypatch.setattr(control.db, "transaction", transaction)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(1.2)  # the server's handler is gone too
    monkeypatch.undo()


async def create(stubs: Stubs, **overrides: Any) -> tpb.Trigger:
    return await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(**overrides)), metadata=AUTH)


async def test_a_create_cancelled_after_its_commit_is_announced_and_announced_again_by_its_retry(
        control: RunningControl, stubs: Stubs, heard: Heard, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    req = pb.CreateTriggerRequest(trigger=trigger(request_id="sl-1"))
    await cancelled_after_commit(control, monkeypatch, stubs.triggers.CreateTrigger(req, metadata=AUTH, timeout=0.3))
    [(tid, state)] = query(db_url, "SELECT id, state FROM triggers")
    assert state == "ARMED"  # committed
    assert await heard.next() == (tid, "upsert")  # by the resync loop
    retry = await stubs.triggers.CreateTrigger(req, metadata=AUTH)  # replayed: 200, nothing created
    assert (retry.id, retry.state) == (tid, tpb.TRIGGER_STATE_ARMED)
    assert await heard.next() == (tid, "upsert")


async def test_a_patch_cancelled_after_its_commit_is_announced_and_announced_again_by_its_retry(
        control: RunningControl, stubs: Stubs, heard: Heard, monkeypatch: pytest.MonkeyPatch) -> None:
    created = await create(stubs)
    assert await heard.next() == (created.id, "upsert")
    patch = pb.UpdateTriggerRequest(id=created.id, trigger=tpb.Trigger(trigger_price="0.40"))
    await cancelled_after_commit(control, monkeypatch, stubs.triggers.UpdateTrigger(patch, metadata=AUTH, timeout=0.3))
    assert await heard.next() == (created.id, "upsert")  # guard would still watch the stop at 0.22 without it
    again = await stubs.triggers.UpdateTrigger(patch, metadata=AUTH)  # nothing left to change: 200
    assert again.trigger_price == "0.4"
    assert await heard.next() == (created.id, "upsert")


async def test_a_cancel_cancelled_after_its_commit_is_announced_and_announced_again_by_its_retry(
        control: RunningControl, stubs: Stubs, heard: Heard, monkeypatch: pytest.MonkeyPatch) -> None:
    created = await create(stubs)
    assert await heard.next() == (created.id, "upsert")
    delete = pb.DeleteTriggerRequest(id=created.id)
    await cancelled_after_commit(control, monkeypatch, stubs.triggers.DeleteTrigger(delete, metadata=AUTH, timeout=0.3))
    assert await heard.next() == (created.id, "remove")
    await stubs.triggers.DeleteTrigger(delete, metadata=AUTH)  # CANCELLED already: 200
    assert await heard.next() == (created.id, "remove")


async def test_a_subscription_delete_cancelled_after_its_commit_announces_the_triggers_it_cancelled(
        control: RunningControl, stubs: Stubs, heard: Heard, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    linked = await create(stubs, subscription_id=sub.id)
    assert await heard.next() == (linked.id, "upsert")
    delete = pb.DeleteSubscriptionRequest(id=sub.id)
    await cancelled_after_commit(control, monkeypatch, stubs.subs.DeleteSubscription(delete, metadata=AUTH,
                                                                                     timeout=0.3))
    assert query(db_url, "SELECT state FROM triggers") == [("CANCELLED",)]
    assert await heard.next() == (linked.id, "remove")
    await stubs.subs.DeleteSubscription(delete, metadata=AUTH)  # STOPPED already: 200
    assert await heard.next() == (linked.id, "remove")


async def test_calls_finding_their_change_made_announce_the_trigger_again(stubs: Stubs, heard: Heard) -> None:
    """Without any cancellation: the first calls were announced, their repeats are announced again (guard
    reloads the trigger from PostgreSQL, which changes nothing there)."""
    req = pb.CreateTriggerRequest(trigger=trigger(request_id="sl-2"))
    created = await stubs.triggers.CreateTrigger(req, metadata=AUTH)
    assert await heard.next() == (created.id, "upsert")
    assert (await stubs.triggers.CreateTrigger(req, metadata=AUTH)).id == created.id
    assert await heard.next() == (created.id, "upsert")
    same = pb.UpdateTriggerRequest(id=created.id, trigger=tpb.Trigger(trigger_price="0.22"))
    assert await stubs.triggers.UpdateTrigger(same, metadata=AUTH) == created
    assert await heard.next() == (created.id, "upsert")
    for _ in range(2):
        await stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=created.id), metadata=AUTH)
        assert await heard.next() == (created.id, "remove")


async def test_deleting_a_stopped_subscription_announces_only_the_triggers_its_stop_cancelled(
        stubs: Stubs, heard: Heard) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    by_stop = [await create(stubs, subscription_id=sub.id, trigger_price=p) for p in ("0.2", "0.3")]
    by_user = await create(stubs, subscription_id=sub.id, trigger_price="0.1")
    unlinked = await create(stubs)
    await stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=by_user.id), metadata=AUTH)
    assert [await heard.next() for _ in range(5)][-1] == (by_user.id, "remove")
    expected = sorted((t.id, "remove") for t in by_stop)
    for _ in range(2):
        await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
        assert sorted([await heard.next(), await heard.next()]) == expected
    armed = await stubs.triggers.GetTrigger(pb.GetTriggerRequest(id=unlinked.id), metadata=AUTH)
    assert armed.state == tpb.TRIGGER_STATE_ARMED
    assert await heard.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None


class Reloads:
    """Guard's engine as its trigger sync drives it."""

    def __init__(self) -> None:
        self.resyncs = 0

    async def reload(self, trigger_id: str, *, observed: bool = True) -> None:
        """One trigger (not expected here)."""

    async def resync(self) -> tuple[int, int]:
        """Everything."""
        self.resyncs += 1
        return 0, 0


async def test_a_notice_lost_with_its_process_is_made_up_for_by_the_next_start(
        settings_factory: Callable[..., Settings], redis_client: aioredis.Redis, heard: Heard, db_url: str) -> None:
    """Control stopped with a notice it could not publish: the next start moves the version on once, without a
    notice, so every guard's version check sees a gap and reloads every trigger."""
    first = await start(settings_factory())
    stubs = stubs_for(first.port)
    try:
        await redis_client.set(TRIGGERS_VERSION_KEY, "not a number")  # every publish fails from here
        made = await create(stubs)
    finally:
        await stubs.channel.close()
        await first.stop()
    assert query(db_url, "SELECT id FROM triggers") == [(made.id,)]  # committed, never announced
    await redis_client.set(TRIGGERS_VERSION_KEY, 7)
    engine = Reloads()
    guard = TriggerSync(redis_client, engine, check_s=0.1)
    following = asyncio.create_task(guard.run())
    try:
        await asyncio.wait_for(guard.ready.wait(), 5)
        await asyncio.sleep(0.3)  # quiet: no gap
        assert (guard.version, engine.resyncs) == (7, 1)  # the load when it subscribed
        second = await start(settings_factory())
        try:
            assert await redis_client.get(TRIGGERS_VERSION_KEY) == "8"
            await eventually(lambda: engine.resyncs == 2, timeout_s=5)
            await asyncio.sleep(0.3)
            assert (guard.version, engine.resyncs) == (8, 2)  # once
        finally:
            await second.stop()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    assert await heard.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1) is None
