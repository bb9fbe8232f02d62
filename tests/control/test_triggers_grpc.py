"""Every trigger RPC and error status, and the tt:triggers:changed notifications."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from services.control.trigger_notices import TRIGGERS_CHANNEL, TRIGGERS_VERSION_KEY
from tests.control.conftest import ASSET, AUTH, FOLLOWER, Stubs, subscription, trigger
from tests.control.support import count, execute, expect, expect_unknown_ids, query
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def create(stubs: Stubs, **overrides: Any) -> tpb.Trigger:
    return await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(**overrides)), metadata=AUTH)


async def next_change(pubsub: Any) -> dict[str, Any]:
    msg = await eventually(lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1))
    data: dict[str, Any] = orjson.loads(msg["data"])
    return data


async def notices_version(redis_client: aioredis.Redis) -> int:
    return int(await redis_client.get(TRIGGERS_VERSION_KEY) or 0)


async def test_create_get_patch_cancel_with_notifications(stubs: Stubs, redis_client: aioredis.Redis,
                                                          db_url: str) -> None:
    started = await notices_version(redis_client)  # moved on once by control's start
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(TRIGGERS_CHANNEL)
    await pubsub.get_message(timeout=1)
    created = await create(stubs, wallet=FOLLOWER.upper().replace("0X", "0x"), oco_group="grp_1")
    assert created.id.startswith("trg_") and created.state == tpb.TRIGGER_STATE_ARMED
    assert (created.wallet, created.trigger_price, created.size, created.sell_fraction) == (FOLLOWER, "0.22", "10", "0")
    assert (created.price_source, created.source, created.high_water_mark) == (
        tpb.PRICE_SOURCE_BEST_BID, tpb.TRIGGER_SOURCE_MANUAL, "0")
    assert not created.HasField("fired_time") and created.order_id == "" and created.oco_group == "grp_1"
    assert await next_change(pubsub) == {"triggerId": created.id, "op": "upsert", "version": started + 1}
    assert await stubs.triggers.GetTrigger(pb.GetTriggerRequest(id=created.id), metadata=AUTH) == created

    patched = await stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=created.id, trigger=tpb.Trigger(trigger_price="0.20", size="5")), metadata=AUTH)
    assert (patched.trigger_price, patched.size, patched.kind) == ("0.2", "5", tpb.TRIGGER_KIND_STOP_LOSS)
    assert await next_change(pubsub) == {"triggerId": created.id, "op": "upsert", "version": started + 2}
    [(version,)] = query(db_url, "SELECT version FROM triggers WHERE id = %s", (created.id,))
    assert version == 2

    assert await stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=created.id),
                                              metadata=AUTH) == pb.DeleteTriggerResponse()
    cancelled = await stubs.triggers.GetTrigger(pb.GetTriggerRequest(id=created.id), metadata=AUTH)
    assert (cancelled.state, cancelled.state_reason) == (tpb.TRIGGER_STATE_CANCELLED, "CANCELLED_BY_USER")
    assert await next_change(pubsub) == {"triggerId": created.id, "op": "remove", "version": started + 3}
    await stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=created.id), metadata=AUTH)  # idempotent
    assert await next_change(pubsub) == {"triggerId": created.id, "op": "remove", "version": started + 4}
    methods = [m for (m,) in query(db_url, "SELECT method FROM audit_log ORDER BY id")]
    assert methods == ["CreateTrigger", "UpdateTrigger", "DeleteTrigger"]
    await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=created.id, trigger=tpb.Trigger(trigger_price="0.1")), metadata=AUTH), PRECONDITION,
        f"trigger {created.id} is TRIGGER_STATE_CANCELLED")
    await pubsub.aclose()


async def test_sell_fraction_needs_a_position(stubs: Stubs, db_url: str) -> None:
    await expect(create(stubs, size="0", sell_fraction="0.5"), PRECONDITION,
                 f"sellFraction: followerWalletId w_456 holds no position in assetId {ASSET}")
    execute(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, wallet, size) VALUES ('w_456', %s, %s, 0)",
            (ASSET, FOLLOWER))
    await expect(create(stubs, size="0", sell_fraction="0.5"), PRECONDITION, "sellFraction:")
    execute(db_url, "UPDATE positions SET size = 0.004")  # less than one share step: nothing that can be sold
    await expect(create(stubs, size="0", sell_fraction="0.5"), PRECONDITION, "sellFraction:")
    by_size = await create(stubs)
    await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=by_size.id, trigger=tpb.Trigger(size="0", sell_fraction="1")), metadata=AUTH), PRECONDITION, "sellFraction:")
    execute(db_url, "UPDATE positions SET size = 12.5")
    made = await create(stubs, size="0", sell_fraction="0.5")
    assert (made.size, made.sell_fraction) == ("0", "0.5")
    switched = await stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=by_size.id, trigger=tpb.Trigger(size="0", sell_fraction="1")), metadata=AUTH)
    assert (switched.size, switched.sell_fraction) == ("0", "1")


async def test_subscription_link_is_checked(stubs: Stubs, db_url: str) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    await expect(create(stubs, subscription_id="sub_nope"), INVALID, "subscriptionId: no subscription sub_nope")
    await expect(create(stubs, subscription_id=sub.id, follower_wallet_id="w_other"), INVALID,
                 f"followerWalletId: does not match subscription {sub.id}")
    await expect(create(stubs, subscription_id=sub.id, wallet="0x" + "3" * 40), INVALID,
                 f"wallet: does not match the followerProxy of subscription {sub.id}")
    linked = await create(stubs, subscription_id=sub.id)
    assert linked.subscription_id == sub.id
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
    await expect(create(stubs, subscription_id=sub.id), PRECONDITION, "subscriptionId: subscription")
    assert count(db_url, "triggers") == 1


async def test_invalid_trigger_writes_nothing(stubs: Stubs, db_url: str, redis_client: aioredis.Redis) -> None:
    started = await notices_version(redis_client)
    for overrides, prefix in [
        ({"trigger_price": "1.2"}, "triggerPrice: must be a decimal in (0, 1)"),
        ({"kind": 0}, "kind: required"),
        ({"sell_fraction": "0.5"}, "size: exactly one of size and sellFraction"),
        ({"wallet": "nope"}, "wallet: must be 0x + 40 hex"),
        ({"asset_id": "abc"}, "assetId: must be a decimal token id"),
    ]:
        await expect(create(stubs, **overrides), INVALID, prefix)
    assert count(db_url, "triggers") == 0 and count(db_url, "audit_log") == 0
    assert await notices_version(redis_client) == started


LOOKUPS: list[Callable[[Stubs, str], Awaitable[object]]] = [
    lambda s, i: s.triggers.GetTrigger(pb.GetTriggerRequest(id=i), metadata=AUTH),
    lambda s, i: s.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=i, trigger=tpb.Trigger(trigger_price="0.1")), metadata=AUTH),
    lambda s, i: s.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=i), metadata=AUTH),
]


@pytest.mark.parametrize("call", LOOKUPS)
async def test_an_id_that_cannot_be_an_id_is_not_found(stubs: Stubs, call: Callable[[Stubs, str], Awaitable[object]],
                                                       db_url: str) -> None:
    await create(stubs)
    await expect_unknown_ids(lambda i: call(stubs, i), "trigger", "t", "trg nope", db_url)


async def test_patch_and_cancel_errors(stubs: Stubs, db_url: str) -> None:
    t = await create(stubs)
    await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=t.id, trigger=tpb.Trigger(kind=tpb.TRIGGER_KIND_TAKE_PROFIT)), metadata=AUTH), INVALID,
        "kind: cannot change")
    await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=t.id, trigger=tpb.Trigger(trigger_price="abc")), metadata=AUTH), INVALID, "triggerPrice: must be")
    await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id="trg_nope", trigger=tpb.Trigger(trigger_price="0.1")), metadata=AUTH), grpc.StatusCode.NOT_FOUND,
        "trigger trg_nope not found")
    await expect(stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id="trg_nope"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND)
    await expect(stubs.triggers.GetTrigger(pb.GetTriggerRequest(id="trg_nope"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND)
    await expect(stubs.triggers.GetTrigger(pb.GetTriggerRequest(), metadata=AUTH), INVALID, "id: required")
    unchanged = await stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
        id=t.id, trigger=tpb.Trigger(trigger_price="0.22")), metadata=AUTH)
    assert unchanged == t and count(db_url, "audit_log") == 1
    for state in ("FIRED", "DONE", "FAILED"):
        execute(db_url, "UPDATE triggers SET state = %s WHERE id = %s", (state, t.id))
        await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(
            id=t.id, trigger=tpb.Trigger(trigger_price="0.1")), metadata=AUTH), PRECONDITION,
            f"trigger {t.id} is TRIGGER_STATE_{state}")
        await expect(stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=t.id), metadata=AUTH), PRECONDITION)


async def test_list_by_wallet_with_pages(stubs: Stubs) -> None:
    made = [(await create(stubs, trigger_price=f"0.{i + 1}")).id for i in range(5)]
    await create(stubs, wallet="0x" + "4" * 40)
    await stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=made[1]), metadata=AUTH)
    first = await stubs.triggers.ListTriggers(pb.ListTriggersRequest(wallet=FOLLOWER, page_size=2), metadata=AUTH)
    second = await stubs.triggers.ListTriggers(pb.ListTriggersRequest(
        wallet=FOLLOWER, page_size=2, page_token=first.next_page_token), metadata=AUTH)
    third = await stubs.triggers.ListTriggers(pb.ListTriggersRequest(
        wallet=FOLLOWER, page_size=2, page_token=second.next_page_token), metadata=AUTH)
    assert [t.id for t in [*first.triggers, *second.triggers, *third.triggers]] == made
    assert third.next_page_token == ""
    armed = await stubs.triggers.ListTriggers(pb.ListTriggersRequest(
        wallet=FOLLOWER.upper().replace("0X", "0x"), state=tpb.TRIGGER_STATE_ARMED), metadata=AUTH)
    assert [t.id for t in armed.triggers] == [made[0], *made[2:]]
    for request, prefix in [
        (pb.ListTriggersRequest(), "wallet: required"),
        (pb.ListTriggersRequest(wallet=FOLLOWER, page_size=1000), "pageSize: must be between 1 and 500"),
        (pb.ListTriggersRequest(wallet=FOLLOWER, page_token=first.next_page_token,
                                state=tpb.TRIGGER_STATE_ARMED), "pageToken: page token belongs to a list"),
        (pb.ListTriggersRequest(wallet=FOLLOWER, page_token="%%%"), "pageToken: invalid page token"),
    ]:
        await expect(stubs.triggers.ListTriggers(request, metadata=AUTH), INVALID, prefix)


async def test_a_trigger_records_the_life_of_the_position_it_guards(stubs: Stubs, db_url: str) -> None:
    """The position's opening time is stored with the trigger (the database's clock, as the position's), so guard
    can tell a trigger of a life that ended from one of the position opened again; none when nothing is held."""
    before = await create(stubs)
    execute(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, opened_at)"
            " VALUES ('w_456', %s, %s, 12.5, now() - interval '1 hour')", (ASSET, FOLLOWER))
    made = await create(stubs, size="0", sell_fraction="0.5")
    rows = {r[0]: r[1] for r in query(db_url, "SELECT t.id, t.position_opened_at = p.opened_at FROM triggers t"
                                      " LEFT JOIN positions p ON p.follower_wallet_id = t.follower_wallet_id"
                                      " AND p.asset_id = t.asset_id")}
    assert rows == {before.id: None, made.id: True}


async def test_a_trigger_set_while_nothing_is_held_records_no_life(stubs: Stubs, db_url: str) -> None:
    """A size trigger set while the position is CLOSED (its row keeps the ended life's opening time) is for the next
    life: it records none, or guard would take it for the ended life's and cancel it on the new life's first SELL."""
    execute(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, state, opened_at, closed_at)"
            " VALUES ('w_456', %s, %s, 0, 'CLOSED', now() - interval '1 hour', now())", (ASSET, FOLLOWER))
    made = await create(stubs, size="40")
    assert query(db_url, "SELECT position_opened_at FROM triggers WHERE id = %s", (made.id,)) == [(None,)]
