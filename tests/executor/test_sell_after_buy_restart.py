"""A SELL sized from the position after its BUY, across crashes and restarts of the executor: sized once, sent
once, never shrinking the next one."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.executor.conftest import ASSET, Harness, make_order
from tests.executor.flip import (
    ASKS,
    BIDS,
    NEVER,
    buy_order,
    confirm,
    fail_first_insert_of,
    hold_shares,
    order_row,
    posted_sizes,
    sell_order,
    unconfirmed_flip,
)
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal


async def test_a_sell_waiting_its_turn_survives_a_restart(harness: Harness, db_url: str) -> None:
    """Stopped while the SELL waits (its intent stored without a size): the next start sizes and sends it."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.post_delay_s = 5.0  # the BUY stays unanswered while the executor stops
    running = await harness.start_executor()
    buy = buy_order(7, follower_wallet_id="w_restart", routed_time_ns=time.time_ns())
    sell = sell_order(8, "1", follower_wallet_id="w_restart")
    await harness.route(buy, sell)

    def stored(coid: str) -> str | None:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT state FROM orders WHERE client_order_id = %s", (coid,)).fetchone()
        return row[0] if row else None

    await eventually(lambda: stored(sell.client_order_id) == "NEW" and harness.fake.posts_for(buy.client_order_id))
    await running.stop(0)
    harness.fake.faults.post_delay_s = 0.0
    await harness.start_executor()
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=20)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    assert [D(p.body["size"]) for p in harness.fake.posts_for(sell.client_order_id) if p.body] == [bought]


async def test_a_sell_sized_just_before_a_crash_is_sent_after_the_restart(harness: Harness, db_url: str) -> None:
    """The process dies between ``set_size`` (the row gets size and limit, state still NEW) and the
    SUBMITTING transition. At the restart the row is no longer "sized later" (it has a limit price), so
    ``OrderRunner.resume`` treats it as an ordinary NEW/SUBMITTING order and applies OrderTimedOut to NEW, which
    the lifecycle does not allow: IllegalTransition out of ``start()``, the executor cannot start at all (every
    restart fails the same way while the row exists: no order of any follower runs). This happens whatever the
    intent's age; the backdating below only makes sure a fix that merely allows NEW -> UNKNOWN is not enough
    (past the 30 s resubmit window the never-sent SELL would end LOST instead of being sent)."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER
    running = await harness.start_executor()
    store = running.admission.store
    original = store.set_size

    async def then_die(*args: Any) -> None:
        await original(*args)
        await asyncio.Event().wait()  # the process is killed right after the size is written

    store.set_size = then_die  # type: ignore[method-assign]
    w = "w_crash"
    buy = buy_order(1, follower_wallet_id=w)
    sell = sell_order(2, "1", follower_wallet_id=w)
    await harness.route(buy, sell)
    await eventually(lambda: harness.fake.order(buy.client_order_id))
    confirm(harness, buy.client_order_id)
    await eventually(lambda: (r := order_row(db_url, sell.client_order_id)) is not None and r[1] is not None)
    assert order_row(db_url, sell.client_order_id)[0] == "NEW"  # type: ignore[index]
    await running.stop(0)
    # the SELL's intent is more than 30 s old at the restart (it waited behind a slowly confirming BUY, or the
    # restart took a while)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE orders SET created_at = created_at - interval '60 seconds'"
                     " WHERE client_order_id = %s", (sell.client_order_id,))
    harness.fake.settle_s = 0.02
    await harness.start_executor()
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=20)
    bought = harness.fake.order(buy.client_order_id).filled_size  # type: ignore[union-attr]
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, sell.client_order_id) == [bought]


async def test_a_buy_routed_after_the_sell_waits_for_its_size_also_across_a_restart(harness: Harness,
                                                                                     db_url: str) -> None:
    """Leader: BUY, SELL everything, BUY again. The SELL sells what the first copy BUY bought: the second copy
    BUY is held until the SELL has its size (what it buys is not the SELL's to sell), also when the executor
    restarts meanwhile (the order of arrival is stored with the intents)."""
    running, buy1, sell = await unconfirmed_flip(harness, "w_rs", 1)
    w = "w_rs"
    await harness.route(buy1, sell)
    await eventually(lambda: harness.fake.order(buy1.client_order_id))
    buy2 = buy_order(3, follower_wallet_id=w, leader_trade_id="lt_b2", routed_time_ns=time.time_ns())
    await harness.route(buy2)
    await eventually(lambda: order_row(db_url, buy2.client_order_id))
    await asyncio.sleep(0.3)
    assert harness.fake.posts_for(buy2.client_order_id) == []  # held behind the SELL waiting for its size
    await running.stop(0)
    await harness.start_executor()
    await asyncio.sleep(0.3)
    assert harness.fake.posts_for(buy2.client_order_id) == []  # still behind it after the restart
    harness.fake.settle_s = 0.02
    confirm(harness, buy1.client_order_id)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought1 = harness.fake.order(buy1.client_order_id).filled_size  # type: ignore[union-attr]
    assert posted_sizes(harness, sell.client_order_id) == [bought1]
    second = await eventually(lambda: harness.terminal(buy2.client_order_id), timeout_s=15)
    assert second.type == epb.ORDER_EVENT_TYPE_FILLED
    assert len(harness.fake.posts_for(buy2.client_order_id)) == 1


async def test_a_failed_chunk_keeps_its_buy_ahead_of_the_sell_for_the_retry(harness: Harness, db_url: str) -> None:
    """One routed trade of 41 orders: the BUY in chunk 2, the SELL in chunk 3. Chunk 3 commits and the SELL
    waits for the BUY; chunk 2's insert then fails (PostgreSQL away longer than the intent retry window) and
    the consumer hands the trade in again: the BUY keeps its place ahead of the SELL, which sells what it
    bought instead of ending NOTHING_HELD."""
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    running.admission.intent_retry_s = 0.0
    w = "w_fail"
    buy = buy_order(8, follower_wallet_id=w)
    sell = sell_order(40, "1", follower_wallet_id=w)
    others = [make_order(i) for i in range(40) if i != 8]
    orders = [*others[:8], buy, *others[8:], sell]
    assert orders.index(buy) == 8 and orders.index(sell) == 40
    failed = fail_first_insert_of(running, buy.client_order_id, delay_s=0.5)  # the next chunk commits meanwhile
    await harness.route(*orders)
    bought = await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=20)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=20)
    assert failed and bought.type == epb.ORDER_EVENT_TYPE_FILLED
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, sell.client_order_id) == [D(bought.filled_size)]


async def test_a_sell_sized_before_a_crash_does_not_shrink_the_next_sell_after_the_restart(
        harness: Harness, db_url: str) -> None:
    """The leader sells half, then the rest, while the copy BUY is in flight: S1 (0.5) and S2 (1). S1 is sized
    and the process dies before it is recorded as sent. After the restart S1 still goes first (the order of
    arrival is kept) and its stale size does not count as being sold: everything is sold, half then the rest."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER
    w = "w_two"
    hold_shares(db_url, w, 100)
    running = await harness.start_executor()
    store = running.admission.store
    original = store.set_size
    s1 = sell_order(2, "0.5", follower_wallet_id=w)
    s2 = sell_order(3, "1", follower_wallet_id=w)

    async def then_die(coid: str, *args: Any) -> None:
        await original(coid, *args)
        if coid == s1.client_order_id:
            await asyncio.Event().wait()  # killed right after the size is written

    store.set_size = then_die  # type: ignore[method-assign]
    buy = buy_order(1, follower_wallet_id=w)
    await harness.route(buy, s1)
    await eventually(lambda: harness.fake.order(buy.client_order_id))
    await harness.route(s2)
    await eventually(lambda: running.runner.running(s2.client_order_id))
    confirm(harness, buy.client_order_id)
    harness.fake.settle_s = 0.02

    def sized(coid: str) -> bool:
        row = order_row(db_url, coid)
        return row is not None and row[0] == "NEW" and row[1] is not None

    await eventually(lambda: sized(s1.client_order_id))
    await running.stop(0)
    await harness.start_executor()
    a = await eventually(lambda: harness.terminal(s1.client_order_id), timeout_s=15)
    b = await eventually(lambda: harness.terminal(s2.client_order_id), timeout_s=15)
    assert a.type == b.type == epb.ORDER_EVENT_TYPE_FILLED, (a.reason, b.reason)
    bought = harness.fake.order(buy.client_order_id).filled_size  # type: ignore[union-attr]
    first, second = posted_sizes(harness, s1.client_order_id), posted_sizes(harness, s2.client_order_id)
    assert first == [((100 + bought) / 2).quantize(D("0.01"), rounding="ROUND_DOWN")]
    assert sum(first + second) == 100 + bought, (first, second)
