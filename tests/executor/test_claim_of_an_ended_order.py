"""A routed order handed in again after it ended, claimed again meanwhile: a Redis failover lost its claim and its
release, and the router's relog appended the trade again with the orders it read no intent for, which the executor
inserted (and ran to its end) between that read and the relog's emit. The emit's claims reserve again; the
executor, which runs nothing for an order already ended, must release what such a claim reserves, or it holds the
follower's headroom for good (no order is left to end and release it, and no sweep looks at it)."""

from __future__ import annotations

import pytest

from common import reservations
from services.router.outbound import reservation_lines
from tests.executor.conftest import ASSET, Harness, make_order
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]


async def _held(harness: Harness, wallet: str) -> int:
    return (await reservations.read(harness.redis, [wallet]))[wallet].total_usd_micro


async def test_a_claim_made_again_for_an_ended_order_is_released_when_it_is_handed_in_again(
        harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    order = make_order(1)
    routed = epb.RoutedTrade(orders=[order])
    claim = reservations.LUA_FUNCTIONS + "return tt_claim_line(ARGV[1])"
    assert await harness.redis.eval(claim, 0, reservation_lines(routed)) == 1  # the router's emit
    await harness.route(order)
    end = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=15)
    assert end.type == epb.ORDER_EVENT_TYPE_FILLED

    async def released() -> bool:
        return await _held(harness, order.follower_wallet_id) == 0

    await eventually(released, timeout_s=5)
    # the failover: the claim and its release are gone; the relog's emit claims the order again and appends it
    await harness.redis.delete(reservations.order_key(order.client_order_id))
    assert await harness.redis.eval(claim, 0, reservation_lines(routed)) == 1
    assert await _held(harness, order.follower_wallet_id) == 10_000_000
    duplicates = running.admission.duplicates
    await harness.route(order)
    await eventually(lambda: running.admission.duplicates > duplicates, timeout_s=10)
    try:  # by the hand-in or at the latest a journal sweep (every 2 s); the bound leaves room for load
        await eventually(released, timeout_s=15)
    except AssertionError:
        held = await _held(harness, order.follower_wallet_id)
        pytest.fail(f"ended order {order.client_order_id} claimed again keeps {held} micro-USD reserved for good")
    assert len(harness.fake.posts_for(order.client_order_id)) == 1  # and it is not sent again
