"""A leader BUY made before a subscription last became ACTIVE (while it was paused, or before it existed),
reaching the router late (the data-api poller's maker fills), is copied to no follower but those active then."""

from __future__ import annotations

import time

import pytest

from tests.helpers import eventually
from tests.router.conftest import Stack, leader_trade, subscription
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


async def test_a_buy_made_while_a_subscription_was_paused_is_not_copied_after_its_resume(stack: Stack) -> None:
    now_s = int(time.time())
    steady = subscription("sub_a", "w_a")  # active for an hour
    steady.active_time.FromSeconds(now_s - 3600)
    resumed = subscription("sub_b", "w_b")  # resumed just now
    resumed.active_time.FromSeconds(now_s)
    legacy = subscription("sub_c", "w_c")  # an index entry written before activeTime existed: not judged
    await stack.add(steady, resumed, legacy)
    await stack.start_router()
    # a maker fill of the leader 60 s ago, found by the data-api poller now
    await stack.publish(leader_trade("lt_paused", source=mpb.FEED_SOURCE_DATA_API,
                                     venue_time_ms=(now_s - 60) * 1000))

    async def routed() -> list[epb.RoutedTrade] | None:
        return await stack.routed() or None

    [r] = await eventually(routed, timeout_s=15)
    assert sorted(o.subscription_id for o in r.orders) == ["sub_a", "sub_c"]
    assert [(s.subscription_id, s.reason) for s in r.skips] == [("sub_b", "TRADE_BEFORE_ACTIVE")]
