"""Review of services/control: each test here demonstrates a defect (it fails on the code as reviewed)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from services.control import triggers as triggers_mod
from tests.control.conftest import AUTH, Stubs, subscription, trigger
from tests.control.support import query
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb


async def test_trigger_created_while_its_subscription_is_deleted_stays_armed(
        stubs: Stubs, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DELETE /subscriptions/{id} promises "open triggers are cancelled". A POST /triggers for that
    subscription that read it ACTIVE (``_check_subscription``, a plain SELECT, no row lock) just before the
    DELETE committed inserts its trigger after the DELETE cancelled the ARMED ones: an ARMED trigger of a
    STOPPED subscription, which guard will fire (a SELL the user asked to stop)."""
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


async def test_trigger_value_rounded_out_of_its_validated_range(stubs: Stubs) -> None:
    """``trailPct`` must be in (0, 100): 99.99…9 (30 significant digits) passes the range check, then
    ``common.decimals.fmt`` (``Decimal.normalize`` at the context's 28 digits) rounds it to "100", which is
    what is stored and returned: a value the API itself refuses, and guard's trail of mark × 0."""
    raw = "99." + "9" * 28
    created = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(
        kind=tpb.TRIGGER_KIND_TRAILING_STOP, trigger_price="0", trail_pct=raw)), metadata=AUTH)
    assert Decimal(created.trail_pct) < 100, f"stored trailPct {created.trail_pct} (sent {raw})"
