"""A trigger create that races a DELETE of its subscription never leaves an ARMED trigger on a STOPPED
subscription; a decimal more precise than what is stored is refused rather than rounded out of its range."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from services.control import triggers as triggers_mod
from tests.control.conftest import AUTH, Stubs, subscription, trigger
from tests.control.support import query
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration


async def test_trigger_created_while_its_subscription_is_deleted_does_not_stay_armed(
        stubs: Stubs, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DELETE /subscriptions/{id} promises "open triggers are cancelled". A POST /triggers for that
    subscription locks it while checking it, so a DELETE arriving right after the check waits for the create
    and then cancels the new trigger too (without the lock the trigger stayed ARMED on a STOPPED
    subscription, and guard would fire a SELL the user asked to stop)."""
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    original = triggers_mod.TriggerUseCases._check_subscription
    deletes: list[asyncio.Future[Any]] = []

    async def check_then_a_concurrent_delete(conn: Any, t: tpb.Trigger) -> None:
        await original(conn, t)
        # Another request deletes the subscription now. Given up to 3 s (a fixed version that locks the
        # subscription row makes the DELETE wait for this create instead of deadlocking the test).
        task = asyncio.ensure_future(stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id),
                                                                   metadata=AUTH))
        deletes.append(task)
        await asyncio.wait({task}, timeout=3.0)

    monkeypatch.setattr(triggers_mod.TriggerUseCases, "_check_subscription",
                        staticmethod(check_then_a_concurrent_delete))
    created: tpb.Trigger | None = None
    try:
        created = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(
            trigger=trigger(subscription_id=sub.id)), metadata=AUTH)
    except Exception:  # noqa: BLE001 - refusing the create is a correct outcome too
        created = None
    await asyncio.gather(*deletes)
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert got.state == spb.SUBSCRIPTION_STATE_STOPPED
    armed = query(db_url, "SELECT id FROM triggers WHERE subscription_id = %s AND state = 'ARMED'", (sub.id,))
    assert armed == [], (f"trigger {created.id if created else '?'} is ARMED on STOPPED subscription {sub.id}")


@pytest.mark.parametrize("field", ["trailPct", "triggerPrice"])
async def test_a_decimal_more_precise_than_what_is_stored_is_refused(stubs: Stubs, field: str) -> None:
    """``trailPct`` in (0, 100) as 99.99…9 with 30 significant digits would be stored rounded to "100" (the
    decimal context keeps 28), a value the API refuses, and guard's trail would be mark × 0; likewise a
    triggerPrice of 0.99…9 stored as "1". Refused with 400, naming the field."""
    if field == "trailPct":
        t = trigger(kind=tpb.TRIGGER_KIND_TRAILING_STOP, trigger_price="0", trail_pct="99." + "9" * 28)
    else:
        t = trigger(trigger_price="0." + "9" * 29)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=t), metadata=AUTH)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "") and "significant digits" in (err.value.details() or "")


async def test_trailing_zeros_do_not_count_as_precision(stubs: Stubs) -> None:
    created = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(
        kind=tpb.TRIGGER_KIND_TRAILING_STOP, trigger_price="0", trail_pct="5." + "0" * 40)), metadata=AUTH)
    assert created.trail_pct == "5"
