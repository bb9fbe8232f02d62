"""The journal shares transactions across orders under load; the store writes a change set in few statements."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import pytest
import redis.asyncio as aioredis

from common import reservations
from common.livefeed import LiveFeed
from common.storage import create_pool
from common.streams import ORDER_EVENTS, DurableLog, create_stream_redis
from services.executor.adapters.order_store import OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.journal import Journal
from tests.executor.conftest import filled_change, make_order, placed_change, refused_change, rows

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


@dataclass
class Parts:
    store: OrderStore
    redis: aioredis.Redis
    events_log: DurableLog
    pool: Any


@pytest.fixture
async def parts(db_url: str, redis_url: str) -> AsyncIterator[Parts]:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    redis = aioredis.from_url(redis_url)
    sredis = create_stream_redis(redis_url)
    log_ = DurableLog(sredis, ORDER_EVENTS, live=LiveFeed())
    await log_.prime()
    try:
        yield Parts(OrderStore(pool), redis, log_, pool)
    finally:
        await pool.close()
        await redis.aclose()
        await sredis.aclose()


async def _running(parts: Parts, min_interval_s: float) -> tuple[Journal, asyncio.Task[None]]:
    journal = Journal(parts.store, parts.redis, parts.events_log, reservations.release_many,
                      min_interval_s=min_interval_s)
    task = asyncio.create_task(journal.run())
    return journal, task



async def _stop(journal: Journal, task: asyncio.Task[None]) -> None:
    await journal.write([], urgent=True)  # like a drain: not in the middle of a post-commit step
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_changes_arriving_within_the_interval_share_one_transaction(parts: Parts) -> None:
    journal, task = await _running(parts, min_interval_s=0.3)
    try:
        await journal.write([], inserts=[refused_change(1)])  # a transaction starts now
        commits = journal.stats.commits
        # both arrive within 0.3 s of that transaction: they wait for it and share the next one
        second = asyncio.create_task(journal.write([], inserts=[refused_change(2)]))
        await asyncio.sleep(0.02)
        third = asyncio.create_task(journal.write([], inserts=[refused_change(3)]))
        assert await second == {"co_test00002"} and await third == {"co_test00003"}
        assert journal.stats.commits == commits + 1
    finally:
        await _stop(journal, task)


async def test_a_change_after_a_quiet_spell_and_an_urgent_one_are_written_at_once(parts: Parts) -> None:
    journal, task = await _running(parts, min_interval_s=30.0)
    try:
        started = time.monotonic()
        await asyncio.wait_for(journal.write([], inserts=[refused_change(1)]), timeout=5)  # nothing written for 30 s
        # within the interval: an urgent write (a SubmitOrder caller waits) does not wait for company
        await asyncio.wait_for(journal.write([], inserts=[refused_change(2)], urgent=True), timeout=5)
        # and it also takes along a change that was already waiting
        waiting = asyncio.create_task(journal.write([], inserts=[refused_change(3)]))
        await asyncio.sleep(0.02)
        assert not waiting.done()
        await asyncio.wait_for(journal.write([], inserts=[refused_change(4)], urgent=True), timeout=5)
        assert await asyncio.wait_for(waiting, timeout=5) == {"co_test00003"}
        assert time.monotonic() - started < 10
    finally:
        await _stop(journal, task)


async def test_one_apply_updates_orders_records_events_and_books_fills_once(parts: Parts, db_url: str) -> None:
    now = time.time_ns()
    # two orders of one follower in one asset, and one order of another follower
    orders = [make_order(1, follower_wallet_id="w_a", subscription_id="sub_a"),
              make_order(2, follower_wallet_id="w_a", subscription_id="sub_a"),
              make_order(3, follower_wallet_id="w_b", subscription_id="sub_b")]
    prepared = [prepare(o, None, RULES, now) for o in orders]
    assert await parts.store.insert_intents([(p.ticket, p.life) for p in prepared]) == {
        o.client_order_id for o in orders}
    placed = [placed_change(p.ticket, p.life, now) for p in prepared]
    # accepts alone: no fills, one statement
    assert await parts.store.apply([], [c for c, _ in placed[:2]]) == (set(), [])
    assert rows(db_url, "SELECT state FROM orders ORDER BY client_order_id") == [
        ("PLACED",), ("PLACED",), ("SUBMITTING",)]
    # the third order's accept and every fill in one change set (an order's changes in order)
    fills = [filled_change(p.ticket, life, size, now)
             for p, (_, life), size in zip(prepared, placed, ["10", "20", "30"], strict=True)]
    changes = [placed[2][0], *fills]
    inserted, booked = await parts.store.apply([], changes)
    assert inserted == set() and len(booked) == 3
    assert rows(db_url, "SELECT state, filled_size FROM orders ORDER BY client_order_id") == [
        ("FILLED", D("10")), ("FILLED", D("20")), ("FILLED", D("30"))]
    assert rows(db_url, "SELECT follower_wallet_id, size, cost_usd FROM positions ORDER BY 1") == [
        ("w_a", D("30"), D("15.0")), ("w_b", D("30"), D("15.0"))]
    assert rows(db_url, "SELECT subscription_id, copied, exposure_usd FROM subscription_stats ORDER BY 1") == [
        ("sub_a", 2, D("15.0")), ("sub_b", 1, D("15.0"))]
    types = rows(db_url, "SELECT client_order_id, type FROM order_events ORDER BY seq")
    assert types == [("co_test00001", "ORDER_EVENT_TYPE_PLACED"), ("co_test00002", "ORDER_EVENT_TYPE_PLACED"),
                     ("co_test00003", "ORDER_EVENT_TYPE_PLACED"), ("co_test00001", "ORDER_EVENT_TYPE_FILLED"),
                     ("co_test00002", "ORDER_EVENT_TYPE_FILLED"), ("co_test00003", "ORDER_EVENT_TYPE_FILLED")]
    # a replay (a restart re-applying the same changes) books nothing and duplicates no event
    assert await parts.store.apply([], fills) == (set(), [])
    assert rows(db_url, "SELECT count(*) FROM fills") == [(3,)]
    assert rows(db_url, "SELECT sum(size) FROM positions") == [(D("60"),)]
    assert rows(db_url, "SELECT count(*) FROM order_events") == [(6,)]
