"""A SELL sent with the fraction of the position to sell (the leader bought and sold before the copy BUY was
answered) waits until the wallet's earlier orders on the asset are answered, then sells that fraction of
what is held: the BUY's shares included, never sent when nothing is held."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from common import reservations
from services.executor.domain.sell_sizing import fraction_size
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order
from tests.executor.flip import (
    ASKS,
    BIDS,
    NEVER,
    SUB,
    buy_order,
    confirm,
    held_size,
    hold_shares,
    order_row,
    posted_sizes,
    sell_order,
    skipped_by_subscription,
    unconfirmed_flip,
)
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal


@pytest.mark.parametrize(("held", "fraction", "expected"), [
    (D("19.6"), D(1), D("19.6")),
    (D("20"), D("0.5"), D(10)),
    (D("100.257"), D("0.3333"), D("33.41")),  # rounded down to the share step
    (D(8), D("0.5"), D(8)),  # 4 would leave 4 < min 5: everything
    (D(3), D(1), ("SELL_BELOW_MARKET_MINIMUM",)),
    (D(100), D("0.01"), ("SELL_BELOW_MARKET_MINIMUM",)),
    (D("0.004"), D(1), ("NOTHING_HELD",)),  # dust
    (D(0), D("0.5"), ("NOTHING_HELD",)),
])
def test_fraction_size(held: Decimal, fraction: Decimal, expected: object) -> None:
    got = fraction_size(held, fraction, D(5))
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and got[0] == expected[0] and got[1]
    else:
        assert got == expected


async def test_a_sell_routed_while_the_buy_is_in_flight_sells_what_the_buy_bought(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.post_delay_s = 0.3  # the BUY's answer takes a while: the SELL arrives meanwhile
    await harness.start_executor()
    buy = buy_order(1, follower_wallet_id="w_flip", routed_time_ns=time.time_ns())
    sell = sell_order(2, "1", follower_wallet_id="w_flip")
    # the router's claim of the SELL reserves no shares (its size is not known yet)
    assert await reservations.reserve(harness.redis, [reservations.Reservation(
        sell.client_order_id, "w_flip", reservations.SHARES, ASSET, 0, "lt_s2")]) == [True]
    await harness.route(buy)
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    [buy_post] = harness.fake.posts_for(buy.client_order_id)
    [sell_post] = harness.fake.posts_for(sell.client_order_id)
    assert sell_post.arrival_ns >= buy_post.arrival_ns + 250_000_000  # sent after the BUY's answer
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    assert bought > 0
    assert sell_post.body is not None and D(sell_post.body["size"]) == bought  # the leader closed: all of it
    await eventually(lambda: held_size(db_url, "w_flip") == 0)
    # sized, it reserved its shares (so the router's next SELL did not count them), then released them (after
    # the commit that booked the fill: waited for, not read at once)
    released = f"-w_flip|sh:{ASSET}|{reservations.to_micro(bought)}|lt_s2"

    async def record_released() -> bool:
        record = await harness.redis.get(reservations.ORDER_PREFIX + sell.client_order_id)
        assert record == released
        return True
    await eventually(record_released)
    with psycopg.connect(db_url) as conn:
        size, limit, proto = conn.execute("SELECT size, limit_price, order_proto FROM orders"
                                          " WHERE client_order_id = %s", (sell.client_order_id,)).fetchone()
    assert size == bought and limit is not None and epb.Order.FromString(proto).size == sell_post.body["size"]


async def test_a_fraction_counts_the_shares_held_before_and_those_bought_meanwhile(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, subscription_id) VALUES ('w_half', %s, %s, '0xa', 100, 0.4, 40, %s)",
                     (ASSET, CONDITION, SUB))
    harness.fake.faults.post_delay_s = 0.3
    await harness.start_executor()
    buy = buy_order(3, follower_wallet_id="w_half", routed_time_ns=time.time_ns())
    sell = sell_order(4, "0.5", follower_wallet_id="w_half")
    await harness.route(buy, sell)  # one routed batch: the BUY is started first
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    [sell_post] = harness.fake.posts_for(sell.client_order_id)
    assert sell_post.body is not None
    assert D(sell_post.body["size"]) == ((100 + bought) / 2).quantize(D("0.01"), rounding="ROUND_DOWN")


async def test_nothing_bought_nothing_sold(harness: Harness) -> None:
    """The BUY was refused by the venue: the SELL finds nothing held and is refused without a POST."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.faults.reject_queue.append("INSUFFICIENT_BALANCE")
    harness.fake.faults.post_delay_s = 0.2
    await harness.start_executor()
    buy = buy_order(5, follower_wallet_id="w_none", routed_time_ns=time.time_ns())
    sell = sell_order(6, "1", follower_wallet_id="w_none")
    await harness.route(buy)
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "NOTHING_HELD")
    assert harness.fake.posts_for(sell.client_order_id) == []
    refused = await harness.terminal(buy.client_order_id)
    assert refused is not None and refused.type == epb.ORDER_EVENT_TYPE_REJECTED
    # the SELL declined for want of shares is its subscription's skip (the venue's refusal is not)
    assert skipped_by_subscription(harness.db_url) == [(sell.subscription_id, 1)]




# Below, timing is in the tests' hands: the Insiders fake keeps matched orders unconfirmed (settle_s
# NEVER) until a test confirms one (confirm).


async def test_a_fraction_sell_in_a_later_chunk_than_its_buy_still_waits_for_it(harness: Harness,
                                                                                db_url: str) -> None:
    """A batch of 41 orders is admitted in chunks (8, 32, ...): chunks after the first are inserted side by
    side and each starts its orders when its own INSERT commits. When the SELL's chunk commits before the
    BUY's (here: the BUY's INSERT is slow, as under pool contention or a retried insert), the SELL starts
    first, finds nothing ahead of it in the PositionQueue, is sized at once on nothing and is REJECTED
    NOTHING_HELD: the follower keeps what the leader sold."""
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    w = "w_chunk"
    buy = buy_order(8, follower_wallet_id=w)
    sell = sell_order(40, "1", follower_wallet_id=w)
    others = [make_order(i) for i in range(40) if i != 8]
    orders = [*others[:8], buy, *others[8:], sell]  # the BUY is in chunk 2 (8..39), the SELL in chunk 3
    assert orders.index(buy) == 8 and orders.index(sell) == 40
    store = running.admission.store
    original = store.insert_intents

    async def slow(items: list[Any]) -> set[str]:
        if any(t.client_order_id == buy.client_order_id for t, _ in items):
            await asyncio.sleep(0.5)  # this chunk's INSERT commits after the next chunk's
        return await original(items)

    store.insert_intents = slow  # type: ignore[method-assign]
    await harness.route(*orders)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    bought = await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=15)
    assert bought.type == epb.ORDER_EVENT_TYPE_FILLED
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, sell.client_order_id) == [D(bought.filled_size)]




async def test_the_wait_for_the_buy_does_not_use_up_the_sells_resubmit_window(harness: Harness,
                                                                              db_url: str) -> None:
    """The sized SELL keeps the ticket's creation time (its intent insert), so the time it waited for the
    BUY counts as age: a first POST lost on the way is not re-POSTed once the wait passed the resubmit
    window (30 s by default; 2 s here), and the SELL ends LOST, where the same SELL routed sized is re-POSTed
    and filled. (The same age also cuts the breaker wait in ``_submit``.)"""
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor(TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="2")
    harness.fake.faults.timeout_delay_s = 1.0
    # control: a SELL sized by the router whose POST is lost is settled, re-POSTed and filled
    hold_shares(db_url, "w_sized", 20)
    sized = make_order(1, side=cpb.SIDE_SELL, amount_usd="", size="20", follower_wallet_id="w_sized")
    harness.fake.faults.lose_posts = 1
    await harness.route(sized)
    ok = await eventually(lambda: harness.terminal(sized.client_order_id), timeout_s=15)
    assert ok.type == epb.ORDER_EVENT_TYPE_FILLED and len(harness.fake.posts_for(sized.client_order_id)) == 2
    # the same with a SELL that waited 2.5 s for its BUY's confirmation
    harness.fake.settle_s = NEVER
    w = "w_wait"
    buy = buy_order(2, follower_wallet_id=w)
    sell = sell_order(3, "1", follower_wallet_id=w)
    await harness.route(buy, sell)
    await eventually(lambda: harness.fake.order(buy.client_order_id))
    await asyncio.sleep(2.5)
    harness.fake.faults.lose_posts = 1  # the SELL's first POST is lost
    harness.fake.settle_s = 0.02
    confirm(harness, buy.client_order_id)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.type, done.reason, done.detail)


async def test_a_fraction_sell_that_arrives_stale_is_refused_like_a_sized_one(harness: Harness,
                                                                             db_url: str) -> None:
    """The staleness check (max order age, 60 s) refuses a copy that reaches the executor long after it was
    routed (a backlog, an executor that was down). A fraction SELL skips it at intake (``_check_fraction``
    does not call ``_check_age``) and has its routed time reset to now when sized, so a SELL decided two
    minutes ago is sold at today's price, while the same SELL sized by the router is STALE_ORDER."""
    await harness.set_book(ASSET, BIDS, ASKS)
    hold_shares(db_url, "w_old_sized", 100)
    hold_shares(db_url, "w_old_frac", 100)
    await harness.start_executor()
    old = time.time_ns() - 120 * 1_000_000_000
    sized = make_order(1, side=cpb.SIDE_SELL, amount_usd="", size="50", follower_wallet_id="w_old_sized",
                       routed_time_ns=old, received_time_ns=old)
    frac = sell_order(2, "0.5", follower_wallet_id="w_old_frac", routed_time_ns=old, received_time_ns=old)
    await harness.route(sized, frac)
    a = await eventually(lambda: harness.terminal(sized.client_order_id), timeout_s=15)
    b = await eventually(lambda: harness.terminal(frac.client_order_id), timeout_s=15)
    assert (a.type, a.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "STALE_ORDER")
    assert (b.type, b.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "STALE_ORDER"), (b.type, b.reason)


async def test_fraction_sells_that_stop_waiting_together_do_not_sell_the_same_shares_twice(
        harness: Harness, db_url: str) -> None:
    """Two fraction SELLs of a position (the leader sold half, then the rest) wait behind an order that does
    not end within the wait cap (a BUY whose match the chain has not confirmed yet, a resting order). Their
    caps run out together and both are sized at once: neither sees the other (``sellable`` skips NEW rows,
    and the second no longer waits for the first), so the second sells the whole position again: 50 + 100 of
    100 shares. On the venue the second one fails for balance (or sells shares the leader still holds when the
    fractions are partial), and the follower keeps half a position the leader closed. The cap is 120 s; 1 s
    here."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER  # the BUY stays unconfirmed past the cap
    w = "w_cap"
    hold_shares(db_url, w, 100)
    running = await harness.start_executor()
    running.runner.positions.max_wait_s = 1.0
    buy = buy_order(1, follower_wallet_id=w)
    half = sell_order(2, "0.5", follower_wallet_id=w)
    rest = sell_order(3, "1", follower_wallet_id=w)
    await harness.route(buy, half, rest)
    await eventually(lambda: harness.fake.posts_for(half.client_order_id)
                     and harness.fake.posts_for(rest.client_order_id), timeout_s=10)
    sizes = posted_sizes(harness, half.client_order_id) + posted_sizes(harness, rest.client_order_id)
    assert sum(sizes) <= 100, sizes




async def test_a_later_buy_in_an_earlier_committing_chunk_still_waits_for_the_sells_size(
        harness: Harness, db_url: str) -> None:
    """A fan-out batch: BUY 1 (chunk 1), the SELL (chunk 2), BUY 2 routed after it (chunk 3). Chunk 3 commits
    first: BUY 2 is still held, since the SELL took its place (as one waiting for its size) before any chunk."""
    running, buy1, sell = await unconfirmed_flip(harness, "w_pre", 100)
    w = "w_pre"
    buy2 = buy_order(102, follower_wallet_id=w, leader_trade_id="lt_b2")
    others = [make_order(i) for i in range(40)]
    orders = [buy1, *others[:7], *others[7:38], sell, buy2, *others[38:]]
    assert orders.index(sell) == 39 and orders.index(buy2) == 40  # chunk 2 is 8..39, chunk 3 from 40
    store = running.admission.store
    original = store.insert_intents
    gate = asyncio.Event()

    async def slow(items: list[Any]) -> set[str]:
        if any(t.client_order_id == sell.client_order_id for t, _ in items):
            await gate.wait()
        return await original(items)

    store.insert_intents = slow  # type: ignore[method-assign]
    await harness.route(*orders)
    await eventually(lambda: order_row(db_url, buy2.client_order_id))
    await eventually(lambda: harness.fake.order(buy1.client_order_id))
    await asyncio.sleep(0.3)
    assert harness.fake.posts_for(buy2.client_order_id) == []
    gate.set()
    await eventually(lambda: running.runner.running(sell.client_order_id))
    confirm(harness, buy1.client_order_id)
    harness.fake.settle_s = 0.02
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought1 = harness.fake.order(buy1.client_order_id).filled_size  # type: ignore[union-attr]
    assert posted_sizes(harness, sell.client_order_id) == [bought1]
    assert (await eventually(lambda: harness.terminal(buy2.client_order_id))).type == epb.ORDER_EVENT_TYPE_FILLED




async def test_a_fraction_sell_with_an_unreadable_min_order_size_is_refused_and_blocks_nothing(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    hold_shares(db_url, "w_bad", 100)
    running = await harness.start_executor()
    running.runner.positions.max_wait_s = 0.5
    bad = sell_order(1, "0.5", follower_wallet_id="w_bad", min_order_size="abc")
    good = sell_order(2, "1", follower_wallet_id="w_bad")
    await harness.route(bad, good)
    ended = await eventually(lambda: harness.terminal(bad.client_order_id), timeout_s=8)
    assert (ended.type, ended.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "INVALID_ORDER")
    done = await eventually(lambda: harness.terminal(good.client_order_id), timeout_s=8)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED




async def test_shares_an_exit_in_flight_is_selling_are_not_sold_again(harness: Harness, db_url: str) -> None:
    """The follower held 100 shares before the copy BUY. While the fraction SELL waits for the BUY, a stop-loss
    (SubmitOrder, after the SELL) sells those 100 and is still at the venue when the BUY ends: the SELL sells
    what is left, the BUY's shares, not the 100 again."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER
    w = "w_exit"
    hold_shares(db_url, w, 100)
    running = await harness.start_executor()
    buy = buy_order(1, follower_wallet_id=w, leader_trade_id="lt_b1")
    sell = sell_order(2, "1", follower_wallet_id=w)
    await harness.route(buy, sell)
    await eventually(lambda: harness.fake.order(buy.client_order_id))
    exit_ = make_order(4, follower_wallet_id=w, origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL,
                       amount_usd="", size="100", trigger_id="trg_sl", leader_trade_id="")
    await running.admission.submit(exit_)
    await eventually(lambda: harness.fake.order(exit_.client_order_id))  # matched, not confirmed
    confirm(harness, buy.client_order_id)
    harness.fake.order(exit_.client_order_id).matched_at = time.monotonic() + NEVER  # type: ignore[union-attr]
    harness.fake.settle_s = 0.02  # what is matched from now on is confirmed at once (the stop-loss is not)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    bought = harness.fake.order(buy.client_order_id).filled_size  # type: ignore[union-attr]
    assert posted_sizes(harness, sell.client_order_id) == [bought]




async def test_a_fraction_sell_is_written_sized_at_once_not_after_the_journals_pause(
        harness: Harness, db_url: str) -> None:
    """A fraction SELL's size is written before its POST, which waits for that write: the write skips the pause
    the journal keeps between transactions under load (here 30 s) instead of waiting for company."""
    await harness.set_book(ASSET, BIDS, ASKS)
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, subscription_id) VALUES ('w_quick', %s, %s, '0xa', 100, 0.4, 40, %s)",
                     (ASSET, CONDITION, SUB))
    running = await harness.start_executor(TT_TUNE_EXECUTOR_JOURNAL_MIN_INTERVAL_S="30")
    other = make_order(5, follower_wallet_id="w_other", routed_time_ns=time.time_ns())
    await harness.route(other)
    await eventually(lambda: running.journal.stats.commits >= 1)  # the pause now runs from this transaction
    sell = sell_order(6, "0.5", follower_wallet_id="w_quick")
    await harness.route(sell)
    await eventually(lambda: len(harness.fake.posts_for(sell.client_order_id)) == 1, timeout_s=10)
    [post] = harness.fake.posts_for(sell.client_order_id)
    assert post.body is not None and D(post.body["size"]) == D(50)
