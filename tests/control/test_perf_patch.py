"""A PATCH that changes the mode or the profit-scale rule puts the applied multiplier back to 1 (in the PATCH's own
transaction), so a scale never outlives the rule or the venue it was made for."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from common import hotindex
from services.control import subscription_rules as rules
from tests.control.conftest import AUTH, INTERNAL_AUTH, LEADER, Stubs, subscription
from tests.control.support import query
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

PERF = spb.Perf(loss_stop_usd="400", profit_scale_at_usd="100", profit_scale_multiplier="2")


def _scaled() -> spb.Subscription:
    sub = rules.new_subscription(subscription(perf=PERF))
    sub.perf.applied_multiplier = "2"
    return sub


KEEP = [  # PATCHes that leave the scale alone
    (spb.Subscription(mode=cpb.EXECUTION_MODE_PAPER), ()),  # the same mode
    (spb.Subscription(perf=spb.Perf(profit_scale_multiplier="2.0", profit_scale_at_usd="100.00")), ()),
    (spb.Subscription(perf=spb.Perf(loss_stop_usd="500")), ()),  # the loss-stop is not the scale's rule
    (spb.Subscription(label="renamed"), ()),
    (spb.Subscription(perf=spb.Perf(applied_multiplier="5")), ()),  # output only: ignored
]


@pytest.mark.parametrize(("patch", "mask"), [
    (spb.Subscription(mode=cpb.EXECUTION_MODE_LIVE), ()),
    (spb.Subscription(perf=spb.Perf(profit_scale_at_usd="0")), ()),  # rule off
    (spb.Subscription(perf=spb.Perf(profit_scale_at_usd="150")), ()),
    (spb.Subscription(perf=spb.Perf(profit_scale_multiplier="1")), ()),
    (spb.Subscription(perf=spb.Perf(profit_scale_multiplier="3")), ()),
    (spb.Subscription(perf=spb.Perf()), ("perf",)),  # perf reset to its defaults: rule off
    (spb.Subscription(), ("perf.profitScaleMultiplier",)),
])
def test_patch_resets_the_applied_multiplier_with_its_rule(patch: spb.Subscription, mask: tuple[str, ...]) -> None:
    current = _scaled()
    for keep, keep_mask in KEEP:  # after any of these the scale stands
        current = rules.merge_patch(current, keep, keep_mask)
        assert current.perf.applied_multiplier == "2"
    assert rules.merge_patch(current, patch, mask).perf.applied_multiplier == "1"


@pytest.mark.integration
async def test_a_patch_turning_profit_scale_off_unscales_in_the_same_write(
        stubs: Stubs, db_url: str, redis_client: aioredis.Redis) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription(perf=PERF)),
                                              metadata=AUTH)
    await stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(
        id=sub.id, action=pb.PERF_ACTION_SCALE, multiplier="2", decision_id="dec_s", reason="r"),
        metadata=INTERNAL_AUTH)
    got = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(perf=spb.Perf(profit_scale_at_usd="0"))), metadata=AUTH)
    assert (got.perf.profit_scale_at_usd, got.perf.applied_multiplier) == ("0", "1")
    [indexed] = await hotindex.subscriptions_of(redis_client, LEADER)  # what the router sizes with
    assert indexed.perf.applied_multiplier == "1"
    [(stored,)] = query(db_url, "SELECT applied_multiplier FROM subscriptions")
    assert str(stored) == "1"
    [(after,)] = query(db_url, "SELECT after FROM audit_log WHERE method = 'UpdateSubscription'")
    assert _applied(after) == "1"


def _applied(doc: dict[str, Any]) -> str:
    return str(doc["perf"]["appliedMultiplier"])
