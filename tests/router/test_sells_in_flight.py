"""The router and the executor together (real router, real executor, Insiders fake): a leader SELL routed
while a SELL sized by the executor (``sell_fraction``) is still at the venue, or not sized yet, does not sell its
shares again."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from common import reservations
from tests.executor.conftest import Harness, running_harness
from tests.helpers import eventually
from tests.router.conftest import COND, YES, Stack, leader_trade, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
NEVER = 10_000.0


@pytest.fixture
async def executor(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    """The executor in-process with the Insiders fake (the executor tests' harness)."""
    async with running_harness(redis_url, db_url) as h:
        yield h


def _held(db_url: str, wallet: str) -> Decimal:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT size FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
                           (wallet, YES)).fetchone()
    return row[0] if row else D(0)


async def _routed(stack: Stack, n: int) -> list[epb.RoutedTrade]:
    async def check() -> list[epb.RoutedTrade] | None:
        got = await stack.routed()
        return got if len(got) >= n else None

    return await eventually(check, timeout_s=15)


async def _buy_then_a_third_sold(stack: Stack, executor: Harness) -> tuple[epb.Order, epb.Order]:
    """w_1 follows a leader that buys 300 and sells 100: the copy BUY and the copy SELL routed as a fraction (the
    BUY was in flight: the executor sizes it later), once the BUY is at the venue."""
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_buy", size="300", price="0.4"),
                        leader_trade("lt_s1", side=cpb.SIDE_SELL, size="100", price="0.4"))
    buy_trade, s1_trade = await _routed(stack, 2)
    [buy] = buy_trade.orders
    [s1] = s1_trade.orders
    assert s1.sell_fraction and not s1.size
    await eventually(lambda: executor.fake.order(buy.client_order_id))
    return buy, s1


async def test_a_sell_routed_while_a_fraction_sell_is_in_flight_does_not_sell_its_shares_again(
        stack: Stack, executor: Harness, db_url: str) -> None:
    """Leader: BUY 300, SELL 100 (a third), SELL 100 (half of the 200 left). The follower's copy BUY (62.5
    shares) is still unconfirmed at the first SELL: it goes out as fraction 1/3 and is sized 20.83 once the
    BUY is final. While that SELL is at the venue the leader's second SELL arrives: the BUY's USD is
    released, the fraction SELL reserved no shares, so the router sells half of all 62.5 shares (31.25)
    instead of half of the 41.67 not already being sold (20.83): the follower sells 52.08 of 62.5 where the
    leader sold two thirds (41.67), keeping 10.42 shares instead of 20.83."""
    await executor.set_book(YES, [("0.39", "1000")], [("0.40", "1000")])
    executor.fake.settle_s = NEVER  # matched orders stay unconfirmed until the test confirms them
    await executor.start_executor()
    buy, s1 = await _buy_then_a_third_sold(stack, executor)
    executor.fake.order(buy.client_order_id).matched_at = time.monotonic() - 2 * NEVER  # type: ignore[union-attr]
    # the BUY is final (booked, its USD released); the fraction SELL is sized and at the venue, not final yet
    await eventually(lambda: executor.fake.order(s1.client_order_id))
    bought = D(executor.fake.order(buy.client_order_id).filled_size)  # type: ignore[union-attr]
    assert bought == D("62.5")
    await eventually(lambda: _held(db_url, "w_1") == bought)

    async def released() -> bool:
        got = await reservations.read(stack.redis, ["w_1"], COND, YES)
        return got["w_1"].market_usd_micro == 0

    await eventually(released)
    [s1_post] = executor.fake.posts_for(s1.client_order_id)
    s1_size = D(s1_post.body["size"])  # type: ignore[index]
    assert s1_size == D("20.83")
    assert await executor.terminal(s1.client_order_id) is None  # still in flight

    await stack.publish(leader_trade("lt_s2", side=cpb.SIDE_SELL, size="100", price="0.4"))
    *_, s2_trade = await _routed(stack, 3)
    [s2] = s2_trade.orders
    sized_on = (bought - s1_size) * D("0.5")
    assert s2.sell_fraction or D(s2.size) <= sized_on.quantize(D("0.01")), (s2.size, s2.sell_fraction)


async def test_a_sell_routed_before_the_fraction_sell_is_sized_is_sized_after_it(
        stack: Stack, executor: Harness, db_url: str) -> None:
    """As above, but the second SELL comes while the executor is still sizing the first one (it read the position,
    62.5, and waits for the book: up to 1 s; or the routed trade waits for admission, up to 10 s): the BUY is final
    and released, the fraction SELL's claim still reserves no shares. Sized by the router on all 62.5 (31.25), the
    two copies sold 52.08 where the leader sold two thirds; sent as a fraction, the executor sizes it once the first
    one has ended: 20.83 and 20.83, two thirds of 62.5."""
    await executor.set_book(YES, [("0.39", "1000")], [("0.40", "1000")])
    executor.fake.settle_s = NEVER
    running = await executor.start_executor()
    store = running.admission.store
    original = store.sellable
    reading, go = asyncio.Event(), asyncio.Event()

    async def slow(*args: Any) -> Any:  # the first sizing stops after its read of the position
        got = await original(*args)
        if not reading.is_set():
            reading.set()
            await go.wait()
        return got

    store.sellable = slow  # type: ignore[method-assign]
    _buy, s1 = await _buy_then_a_third_sold(stack, executor)
    executor.fake.settle_s = 0.02  # the BUY is confirmed, and every order after it soon after its match
    bought = D("62.5")
    await eventually(lambda: _held(db_url, "w_1") == bought)

    async def released() -> bool:
        got = await reservations.read(stack.redis, ["w_1"], COND, YES)
        return got["w_1"].market_usd_micro == 0

    await eventually(released)
    await asyncio.wait_for(reading.wait(), 10)
    assert (await stack.redis.get(reservations.order_key(s1.client_order_id))).split("|")[2] == "0"

    await stack.publish(leader_trade("lt_s2", side=cpb.SIDE_SELL, size="100", price="0.4"))
    *_, s2_trade = await _routed(stack, 3)
    [s2] = s2_trade.orders
    go.set()
    for coid in (s1.client_order_id, s2.client_order_id):
        end = await eventually(functools.partial(executor.terminal, coid), timeout_s=15)
        assert end.type == epb.ORDER_EVENT_TYPE_FILLED, (coid, end.reason, end.detail)
    sizes = [D(p.body["size"]) for o in (s1, s2) for p in executor.fake.posts_for(o.client_order_id) if p.body]
    assert sizes == [D("20.83"), D("20.83")], (sizes, s2.size, s2.sell_fraction)
    assert _held(db_url, "w_1") == bought - sum(sizes)
