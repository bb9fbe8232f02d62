"""Internal RPCs: funding (as-of ordering) and perf actions (idempotent by decision id)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from common import hotindex
from tests.control.conftest import AUTH, INTERNAL_AUTH, LEADER, Stubs, subscription
from tests.control.support import count, expect, query
from tests.helpers import alerts_raised, eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def ts(dt: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt)
    return out


async def test_funding_keeps_the_latest_reading(stubs: Stubs, db_url: str) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    async def record(balance: str, at: datetime) -> pb.RecordFundingResponse:
        return await stubs.internal.RecordFunding(pb.RecordFundingRequest(
            follower_wallet_id="w_456", balance_usd=balance, as_of=ts(at)), metadata=INTERNAL_AUTH)

    first = await record("100.50", t0)
    assert (first.balance_usd, first.applied, first.as_of) == ("100.5", True, ts(t0))
    older = await record("5", t0 - timedelta(minutes=1))
    assert (older.balance_usd, older.applied, older.as_of) == ("100.5", False, ts(t0))
    same_time = await record("7", t0)
    assert (same_time.balance_usd, same_time.applied) == ("100.5", False)
    newer = await record("250", t0 + timedelta(minutes=1))
    assert (newer.balance_usd, newer.applied) == ("250", True)
    got = await stubs.internal.GetFunding(pb.GetFundingRequest(follower_wallet_id="w_456"), metadata=INTERNAL_AUTH)
    assert (got.balance_usd, got.as_of) == ("250", ts(t0 + timedelta(minutes=1)))
    audits = query(db_url, "SELECT before, after FROM audit_log WHERE entity_type = 'funding' ORDER BY id")
    assert len(audits) == 2 and audits[0][0] is None and audits[1][0]["balanceUsd"] == "100.5"
    assert audits[1][1]["balanceUsd"] == "250"


async def test_funding_errors(stubs: Stubs, db_url: str) -> None:
    now = datetime.now(UTC)
    for request, prefix in [
        (pb.RecordFundingRequest(balance_usd="1", as_of=ts(now)), "followerWalletId: required"),
        (pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="-1", as_of=ts(now)),
         'balanceUsd: must be a decimal >= 0, got "-1"'),
        (pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="", as_of=ts(now)), "balanceUsd: must be"),
        (pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="1000000000.01", as_of=ts(now)),
         'balanceUsd: must be at most 1000000000, got "1000000000.01"'),
        (pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="1e27", as_of=ts(now)),
         "balanceUsd: must be at most 1000000000"),
        (pb.RecordFundingRequest(follower_wallet_id="w|1", balance_usd="1", as_of=ts(now)),
         "followerWalletId: must contain only letters, digits"),
        (pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="1"), "asOf: required"),
        (pb.RecordFundingRequest(follower_wallet_id="w", balance_usd="1", as_of=ts(now + timedelta(hours=1))),
         "asOf: is in the future"),
    ]:
        await expect(stubs.internal.RecordFunding(request, metadata=INTERNAL_AUTH), INVALID, prefix)
    assert count(db_url, "funding") == 0
    await expect(stubs.internal.GetFunding(pb.GetFundingRequest(follower_wallet_id="w_x"), metadata=INTERNAL_AUTH),
                 grpc.StatusCode.NOT_FOUND, "no funding recorded for followerWalletId w_x")
    await expect(stubs.internal.GetFunding(pb.GetFundingRequest(), metadata=INTERNAL_AUTH), INVALID,
                 "followerWalletId:")


async def test_scale_is_applied_once_and_reaches_the_index(stubs: Stubs, db_url: str,
                                                           redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    request = pb.ApplyPerfActionRequest(id=sub.id, action=pb.PERF_ACTION_SCALE, multiplier="1.50",
                                        reason="pnl 1040 >= 1000", decision_id="dec_1")
    first = await stubs.internal.ApplyPerfAction(request, metadata=INTERNAL_AUTH)
    assert first.applied and first.subscription.perf.applied_multiplier == "1.5"
    assert first.subscription.state == spb.SUBSCRIPTION_STATE_ACTIVE
    [indexed] = await hotindex.subscriptions_of(redis_client, LEADER)
    assert indexed.perf.applied_multiplier == "1.5"
    replay = await stubs.internal.ApplyPerfAction(request, metadata=INTERNAL_AUTH)
    assert not replay.applied and replay.subscription == first.subscription
    assert count(db_url, "perf_actions") == 1
    assert count(db_url, "audit_log", "method = 'ApplyPerfAction'") == 1
    [(action, multiplier, reason)] = query(db_url, "SELECT action, multiplier, reason FROM perf_actions")
    assert (action, str(multiplier), reason) == ("SCALE", "1.50", "pnl 1040 >= 1000")
    await expect(stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(
        id=sub.id, action=pb.PERF_ACTION_PAUSE, decision_id="dec_1"), metadata=INTERNAL_AUTH), PRECONDITION,
        f"decisionId: dec_1 was already used for SCALE of {sub.id}")


async def test_pause_action(stubs: Stubs, redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    paused = await stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(
        id=sub.id, action=pb.PERF_ACTION_PAUSE, decision_id="dec_p"), metadata=INTERNAL_AUTH)
    assert paused.applied and paused.subscription.state == spb.SUBSCRIPTION_STATE_PAUSED
    assert paused.subscription.paused_reason == "PERF_LOSS_STOP"
    assert await hotindex.subscriptions_of(redis_client, LEADER) == []
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
    for action in (pb.PERF_ACTION_PAUSE, pb.PERF_ACTION_SCALE):
        await expect(stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(
            id=sub.id, action=action, multiplier="2", decision_id=f"dec_s{action}"), metadata=INTERNAL_AUTH),
            PRECONDITION, f"subscription {sub.id} is SUBSCRIPTION_STATE_STOPPED")


async def test_a_loss_stop_pause_raises_one_alert(stubs: Stubs, redis_url: str) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    for _ in range(2):  # the replay applies nothing and raises nothing
        await stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(
            id=sub.id, action=pb.PERF_ACTION_PAUSE, decision_id="dec_a", reason="LOSS_STOP: pnl -60 <= -50"),
            metadata=INTERNAL_AUTH)

    [alert] = await eventually(lambda: alerts_raised(redis_url, "SUBSCRIPTION_PAUSED"),
                               message="the alert reached tt:stream:alerts")
    assert (alert.kind, alert.key, alert.dedupe_id, alert.service) == (
        "SUBSCRIPTION_PAUSED", f"loss_stop:{sub.id}", "perf_pause:dec_a", "control")
    assert alert.fields["subscription_id"] == sub.id and alert.fields["reason"] == "LOSS_STOP: pnl -60 <= -50"


async def test_perf_action_errors(stubs: Stubs) -> None:
    for request, code, prefix in [
        (pb.ApplyPerfActionRequest(id="sub_x", action=pb.PERF_ACTION_PAUSE, decision_id="d"),
         grpc.StatusCode.NOT_FOUND, "subscription sub_x not found"),
        (pb.ApplyPerfActionRequest(action=pb.PERF_ACTION_PAUSE, decision_id="d"), INVALID, "id: required"),
        (pb.ApplyPerfActionRequest(id="sub_x", decision_id="d"), INVALID, "action: required"),
        (pb.ApplyPerfActionRequest(id="sub_x", action=pb.PERF_ACTION_PAUSE), INVALID, "decisionId: required"),
        (pb.ApplyPerfActionRequest(id="sub_x", action=pb.PERF_ACTION_SCALE, decision_id="d", multiplier="0"),
         INVALID, 'multiplier: must be a decimal in (0, 10], got "0"'),
        (pb.ApplyPerfActionRequest(id="sub_x", action=pb.PERF_ACTION_SCALE, decision_id="d"),
         INVALID, "multiplier: must be a decimal in (0, 10]"),
    ]:
        await expect(stubs.internal.ApplyPerfAction(request, metadata=INTERNAL_AUTH), code, prefix)
