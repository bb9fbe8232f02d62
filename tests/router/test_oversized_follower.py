"""A follower whose ids are too long (a corrupt hot index: control allows 128 characters) is skipped as an invalid
subscription, its skip small: its copy once made a routed part too large for any gRPC message, set aside unserved
with its reservation held, while the router's docs say such entries are never written."""

from __future__ import annotations

import pytest

from common.streams import MAX_ENTRY_BYTES
from tests.executor.conftest import rows
from tests.helpers import eventually
from tests.router.conftest import Stack, leader_trade, subscription

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_a_follower_with_oversized_ids_is_skipped_and_every_entry_can_be_served(stack: Stack) -> None:
    subs = [subscription(f"sub_{i:03d}", f"w_{i:03d}") for i in range(50)]
    big = subscription("sub_big", "w_big")
    big.follower_user_id = "u" * (MAX_ENTRY_BYTES + 1000)
    await stack.add(*subs, big)
    await stack.start_router()
    await stack.publish(leader_trade("lt_1"))
    await eventually(lambda: rows(stack.db_url, "SELECT count(*) FROM routed_trades") == [(1,)], timeout_s=60)
    payloads = await stack.routed_payloads()
    assert max(len(p) for p in payloads) <= MAX_ENTRY_BYTES, [len(p) for p in payloads]
    routed = await stack.routed()
    assert sorted(o.subscription_id for r in routed for o in r.orders) == [s.id for s in subs]
    [skip] = [k for r in routed for k in r.skips if k.subscription_id == "sub_big"]
    assert skip.reason == "INVALID_SUBSCRIPTION" and "followerUserId" in skip.detail, (skip.reason, skip.detail)
