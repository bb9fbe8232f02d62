"""ApplyPerfAction refuses a decision made under rules (mode, perf) that are no longer the subscription's."""

from __future__ import annotations

import grpc
import pytest

from tests.control.conftest import AUTH, INTERNAL_AUTH, Stubs, subscription
from tests.control.support import count, expect
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
PAPER, LIVE = cpb.EXECUTION_MODE_PAPER, cpb.EXECUTION_MODE_LIVE
PERF = spb.Perf(loss_stop_usd="400", profit_scale_at_usd="100", profit_scale_multiplier="2")


def _basis(mode: int = PAPER, **perf: str) -> pb.PerfBasis:
    fields = {"loss_stop_usd": "400", "profit_scale_at_usd": "100", "profit_scale_multiplier": "2", **perf}
    return pb.PerfBasis(mode=mode, perf=spb.Perf(**{k: v for k, v in fields.items() if v != "-"}))


async def _create(stubs: Stubs, perf: spb.Perf = PERF) -> spb.Subscription:
    return await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription(perf=perf)),
                                               metadata=AUTH)


def _scale(sid: str, decision: str, basis: pb.PerfBasis | None) -> pb.ApplyPerfActionRequest:
    req = pb.ApplyPerfActionRequest(id=sid, action=pb.PERF_ACTION_SCALE, multiplier="2", reason="r",
                                    decision_id=decision)
    if basis is not None:
        req.decided_under.CopyFrom(basis)
    return req


@pytest.mark.parametrize("basis", [
    _basis(LIVE),
    _basis(loss_stop_usd="300"),
    _basis(profit_scale_at_usd="0"),
    _basis(profit_scale_at_usd="150"),
    _basis(profit_scale_multiplier="3"),
])
async def test_a_decision_made_under_other_rules_is_refused_and_changes_nothing(
        stubs: Stubs, db_url: str, basis: pb.PerfBasis) -> None:
    sub = await _create(stubs)
    for action in (pb.PERF_ACTION_SCALE, pb.PERF_ACTION_PAUSE):
        req = _scale(sub.id, f"dec_{action}", basis)
        req.action = action
        message = await expect(stubs.internal.ApplyPerfAction(req, metadata=INTERNAL_AUTH), PRECONDITION,
                               f"decidedUnder: the rules of subscription {sub.id} changed since the decision")
        assert "now mode PAPER, lossStopUsd 400, profitScaleAtUsd 100, profitScaleMultiplier 2" in message
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert (got.state, got.perf.applied_multiplier) == (spb.SUBSCRIPTION_STATE_ACTIVE, "1")
    assert count(db_url, "perf_actions") == 0
    assert count(db_url, "audit_log", "method = 'ApplyPerfAction'") == 0


@pytest.mark.parametrize(("perf", "basis"), [
    (PERF, _basis()),
    (PERF, _basis(loss_stop_usd="400.00", profit_scale_multiplier="2.0")),  # the same numbers
    (PERF, None),  # unset (a decision recorded before bases were): not checked
    (spb.Perf(profit_scale_at_usd="100", profit_scale_multiplier="2"), _basis(loss_stop_usd="-")),  # defaults
    (spb.Perf(profit_scale_at_usd="100", profit_scale_multiplier="2"), _basis(loss_stop_usd="0")),
])
async def test_a_decision_made_under_the_current_rules_is_applied(
        stubs: Stubs, perf: spb.Perf, basis: pb.PerfBasis | None) -> None:
    sub = await _create(stubs, perf)
    out = await stubs.internal.ApplyPerfAction(_scale(sub.id, "dec_1", basis), metadata=INTERNAL_AUTH)
    assert out.applied and out.subscription.perf.applied_multiplier == "2"


async def test_a_patch_of_anything_but_the_rules_does_not_refuse_a_decision(stubs: Stubs) -> None:
    sub = await _create(stubs)
    await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(id=sub.id, subscription=spb.Subscription(
        label="renamed", sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="10"))), metadata=AUTH)
    out = await stubs.internal.ApplyPerfAction(_scale(sub.id, "dec_1", _basis()), metadata=INTERNAL_AUTH)
    assert out.applied and out.subscription.perf.applied_multiplier == "2"


async def test_a_replay_of_an_applied_decision_is_not_refused_when_the_rules_changed_since(stubs: Stubs) -> None:
    """Guard re-sends a decision after a restart: applied before, the replay answers so (whatever the rules now)."""
    sub = await _create(stubs)
    req = _scale(sub.id, "dec_1", _basis())
    assert (await stubs.internal.ApplyPerfAction(req, metadata=INTERNAL_AUTH)).applied
    await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(perf=spb.Perf(loss_stop_usd="100"))), metadata=AUTH)
    replay = await stubs.internal.ApplyPerfAction(req, metadata=INTERNAL_AUTH)
    assert not replay.applied


async def test_a_bad_basis_is_invalid(stubs: Stubs, db_url: str) -> None:
    sub = await _create(stubs)
    for basis, prefix in [(_basis(mode=0), "decidedUnder.mode: required"),
                          (_basis(loss_stop_usd="-1"), "decidedUnder.perf.lossStopUsd: must be"),
                          (_basis(profit_scale_multiplier="11"), "decidedUnder.perf.profitScaleMultiplier: must be")]:
        await expect(stubs.internal.ApplyPerfAction(_scale(sub.id, "dec_x", basis), metadata=INTERNAL_AUTH),
                     grpc.StatusCode.INVALID_ARGUMENT, prefix)
    assert count(db_url, "perf_actions") == 0
