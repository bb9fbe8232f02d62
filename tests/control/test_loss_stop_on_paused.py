"""A loss-stop on a subscription its user paused: it takes over ``pausedReason`` and raises its alert, once."""

from __future__ import annotations

import pytest

from tests.control.conftest import AUTH, INTERNAL_AUTH, Stubs, subscription
from tests.control.support import query
from tests.helpers import alerts_raised, eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

REASON = "LOSS_STOP: pnl -60 <= -50"


async def test_a_loss_stop_on_a_user_paused_subscription_takes_over_its_paused_reason(
        stubs: Stubs, redis_url: str, db_url: str) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id, reason="vacation"), metadata=AUTH)
    request = pb.ApplyPerfActionRequest(id=sub.id, action=pb.PERF_ACTION_PAUSE, decision_id="dec_up", reason=REASON)
    first = await stubs.internal.ApplyPerfAction(request, metadata=INTERNAL_AUTH)
    assert first.applied
    assert (first.subscription.state, first.subscription.paused_reason) == (spb.SUBSCRIPTION_STATE_PAUSED, REASON)
    replay = await stubs.internal.ApplyPerfAction(request, metadata=INTERNAL_AUTH)
    assert not replay.applied and replay.subscription == first.subscription
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert got.paused_reason == REASON

    [alert] = await eventually(lambda: alerts_raised(redis_url, "SUBSCRIPTION_PAUSED"),
                               message="the alert reached tt:stream:alerts")
    assert (alert.key, alert.dedupe_id, alert.fields["reason"]) == (f"loss_stop:{sub.id}", "perf_pause:dec_up", REASON)
    [(before, after)] = query(db_url, "SELECT before, after FROM audit_log WHERE method = 'ApplyPerfAction'")
    assert (before["pausedReason"], after["pausedReason"]) == ("vacation", REASON)

    resumed = await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert (resumed.state, resumed.paused_reason) == (spb.SUBSCRIPTION_STATE_ACTIVE, "")
