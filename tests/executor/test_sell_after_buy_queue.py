"""SELLs sized by the executor: places in the position queues are given back when nothing will run the order
(refused, dead-lettered) and not taken twice (a trade handed in again), a BUY held behind such a SELL keeps its
whole resubmit window, and paper mode."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from services.executor.admission import ONE_CHUNK_MAX
from tests.executor.conftest import ASSET, Harness, make_order
from tests.executor.flip import (
    ASKS,
    BIDS,
    NEVER,
    buy_order,
    confirm,
    fail_first_insert_of,
    hold_shares,
    sell_order,
    unconfirmed_flip,
)
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
CAP_S = 4.0


async def test_a_refused_order_of_a_failed_batch_holds_up_no_later_sell(
        harness: Harness, db_url: str) -> None:
    """Two routed trades handled as one consumer batch: T1 = a BUY of wallet w that intake refuses (stale), T2 = a
    fraction SELL of w. ``_handle_orders`` gives both a place (the batch has a fraction SELL); the intent INSERT
    fails once (PostgreSQL blip past the retry window), so the clean-up that ends the places of orders that are
    not running is skipped. The consumer hands the trades in again one by one: T1 alone has no fraction SELL,
    so its refused BUY's place is never ended. The SELL (nothing else in flight: it should go at once) waits
    the whole cap, and so does every later fraction SELL of the position until the executor restarts."""
    await harness.set_book(ASSET, BIDS, ASKS)
    w = "w_leak"
    hold_shares(db_url, w, 100)
    old = time.time_ns() - 120 * 1_000_000_000
    refused_buy = buy_order(1, follower_wallet_id=w, routed_time_ns=old, received_time_ns=old)
    s1 = sell_order(2, "0.5", follower_wallet_id=w)
    running = await harness.start_executor()
    running.runner.positions.max_wait_s = CAP_S
    running.admission.intent_retry_s = 0.0
    failed = fail_first_insert_of(running, s1.client_order_id)
    t1, t2 = epb.RoutedTrade(orders=[refused_buy]), epb.RoutedTrade(orders=[s1])
    started = time.monotonic()
    # what ResumableConsumer._handle_batch does: the batch, and on failure its items one by one
    with pytest.raises(psycopg.OperationalError):
        await running.admission.handle_batch([t1, t2])
    await running.admission.handle(t1)
    await running.admission.handle(t2)
    refused = await eventually(lambda: harness.terminal(refused_buy.client_order_id), timeout_s=10)
    assert (refused.type, refused.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "STALE_ORDER")
    assert not running.runner.running(refused_buy.client_order_id)
    done = await eventually(lambda: harness.terminal(s1.client_order_id), timeout_s=15)
    assert failed
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    took = time.monotonic() - started
    leaked = running.runner.positions.ahead((w, ASSET), "a later order")
    assert took < CAP_S - 1 and leaked == 0, \
        f"the SELL waited {took:.1f} s behind an order that never ran; {leaked} place(s) still held"


async def test_a_dead_lettered_fraction_sell_holds_up_no_later_buy(
        harness: Harness, db_url: str) -> None:
    """A trade with a fraction SELL whose handling keeps failing (not a storage outage) is dead-lettered by the
    consumer after ``max_handler_attempts``: its SELL was registered as waiting for its size but never stored
    nor started. Nothing ends that place, so every later copy BUY of the position is held by
    ``wait_sells_sized`` for the whole cap (120 s) until the executor restarts."""
    await harness.set_book(ASSET, BIDS, ASKS)
    w = "w_dead"
    hold_shares(db_url, w, 100)
    running = await harness.start_executor()
    running.runner.positions.max_wait_s = CAP_S
    store = running.admission.store
    original = store.insert_intents
    poison = sell_order(2, "0.5", follower_wallet_id=w)

    async def broken(items: list[Any]) -> set[str]:
        if any(t.client_order_id == poison.client_order_id for t, _ in items):
            raise ValueError("cannot store this order")  # not transient: the consumer gives up on the trade
        return await original(items)

    store.insert_intents = broken  # type: ignore[method-assign]
    routed = epb.RoutedTrade(orders=[poison])
    for _ in range(running.consumer.max_handler_attempts):  # what ResumableConsumer._handle_one does
        with pytest.raises(ValueError):
            await running.admission.handle(routed)
    assert running.consumer.dead_letter is not None  # then the consumer's dead-letter step
    await running.consumer.dead_letter("1-0", routed, ValueError("cannot store this order"))
    await _next_buy_goes_at_once(harness, running, w)  # later the leader buys again


async def test_the_wait_behind_the_sell_does_not_use_up_the_buys_resubmit_window(harness: Harness,
                                                                                  db_url: str) -> None:
    """Leader: BUY, SELL all, BUY again. The second copy BUY waits 2.5 s for the SELL's size (the first BUY's
    match is unconfirmed); the resubmit window is 2 s here (30 s by default, the wait cap 120 s). Its first
    POST is lost: like a BUY that had not waited, it is settled and re-POSTed (its window counts from the end
    of the wait), where it ended LOST and the leader's re-entry was not copied."""
    harness.fake.faults.timeout_delay_s = 1.0
    running, buy1, sell = await unconfirmed_flip(harness, "w_bw", 1)
    await running.stop(0)
    await harness.start_executor(TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="2")
    await harness.route(buy1, sell)
    await eventually(lambda: harness.fake.order(buy1.client_order_id))
    buy2 = buy_order(3, follower_wallet_id="w_bw", leader_trade_id="lt_b2", routed_time_ns=time.time_ns())
    await harness.route(buy2)
    await asyncio.sleep(2.5)
    assert harness.fake.posts_for(buy2.client_order_id) == []  # held behind the SELL
    harness.fake.settle_s = 0.02
    harness.fake.faults.lose_posts = 2  # the next two POSTs (the SELL's and the second BUY's first) are lost
    confirm(harness, buy1.client_order_id)
    done = await eventually(lambda: harness.terminal(buy2.client_order_id), timeout_s=20)
    sold = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=20)
    assert sold.type == epb.ORDER_EVENT_TYPE_FILLED, (sold.type, sold.reason)  # the sized SELL is re-POSTed
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.type, done.reason, done.detail)


async def test_a_paper_flip_sells_what_the_paper_buy_bought(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor(live=False)
    w = "w_paper"
    buy = buy_order(1, follower_wallet_id=w, mode=cpb.EXECUTION_MODE_PAPER)
    sell = sell_order(2, "1", follower_wallet_id=w, mode=cpb.EXECUTION_MODE_PAPER)
    await harness.route(buy, sell)
    bought = await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=15)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert bought.type == epb.ORDER_EVENT_TYPE_FILLED, (bought.reason, bought.detail)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert Decimal(str(done.filled_size)) == Decimal(str(bought.filled_size))


async def _holding_unconfirmed(harness: Harness, db_url: str, wallet: str) -> Any:
    """The executor (wait cap CAP_S) for a wallet holding 100 shares, on a venue that confirms nothing (a SELL
    stays under way once sent)."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER
    hold_shares(db_url, wallet, 100)
    running = await harness.start_executor()
    running.runner.positions.max_wait_s = CAP_S
    return running


async def _next_buy_goes_at_once(harness: Harness, running: Any, wallet: str) -> None:
    """The leader's next copy BUY of the position goes at once: nothing it must wait for is ahead of it."""
    buy = buy_order(90, follower_wallet_id=wallet, leader_trade_id="lt_b90", routed_time_ns=time.time_ns())
    started = time.monotonic()
    await running.admission.handle(epb.RoutedTrade(orders=[buy]))
    await eventually(lambda: harness.fake.posts_for(buy.client_order_id), timeout_s=CAP_S + 5)
    took = time.monotonic() - started
    assert took < 1.0, f"the BUY waited {took:.1f} s behind a SELL it should not wait for"


async def test_a_redelivered_sized_sell_does_not_hold_later_buys(harness: Harness, db_url: str) -> None:
    """A routed trade handed in again (redelivered since the last saved cursor) while its SELL is already sized
    and at the venue: the SELL keeps its place and is not marked as waiting for its size again."""
    w = "w_redeliver"
    running = await _holding_unconfirmed(harness, db_url, w)
    sell = sell_order(1, "0.5", follower_wallet_id=w)
    routed = epb.RoutedTrade(orders=[sell])
    await running.admission.handle(routed)
    await eventually(lambda: harness.fake.posts_for(sell.client_order_id), timeout_s=10)  # sized and sent
    assert running.runner.running(sell.client_order_id)
    # the same routed trade again (consumer batch fallback, or redelivered since the last saved cursor)
    await running.admission.handle(routed)
    await _next_buy_goes_at_once(harness, running, w)


async def test_batch_fallback_does_not_mark_a_sized_sell_unsized_again(harness: Harness, db_url: str) -> None:
    """What ResumableConsumer._handle_batch does: the batch fails (the second chunk's INSERT), its trades are
    handed in again one by one. The SELL's chunk had committed: it was sized and sent meanwhile; handing its
    trade in again marks it as waiting for its size, and the leader's next BUY waits the whole cap."""
    w = "w_fallback"
    running = await _holding_unconfirmed(harness, db_url, w)
    running.admission.intent_retry_s = 0.0
    sell = sell_order(1, "0.5", follower_wallet_id=w)
    # 33 orders: more than one INSERT takes (ONE_CHUNK_MAX), so chunks of 8 and 25, the SELL in the first
    others = [make_order(10 + k, follower_wallet_id=f"w_other{k}", routed_time_ns=time.time_ns())
              for k in range(ONE_CHUNK_MAX)]
    t1, t2 = epb.RoutedTrade(orders=[sell]), epb.RoutedTrade(orders=others)
    failed = fail_first_insert_of(running, others[-1].client_order_id, delay_s=0.5)  # the second chunk
    with pytest.raises(psycopg.OperationalError):
        await running.admission.handle_batch([t1, t2])
    assert failed
    assert harness.fake.posts_for(sell.client_order_id)  # sized and sent while the batch was failing
    await running.admission.handle(t1)
    await running.admission.handle(t2)
    await _next_buy_goes_at_once(harness, running, w)
