"""A routed trade the executor's consumer dead-letters (its intents cannot be inserted, and not because
PostgreSQL is away: an outage is retried until it is over) never gets order rows, yet the router reserved
its orders' exposure when it emitted it and an unreleased reservation never expires: the dead-letter step
marks its orders orphaned and the journal's sweep releases those that never got a row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from common import reservations
from common.consumer import ResumableConsumer
from common.livefeed import LiveFeed
from common.retry import Backoff
from common.storage import create_pool
from common.streams import ORDER_EVENTS, DurableLog, create_stream_redis
from services.executor.adapters.order_store import OrderStore
from services.executor.admission import OrderAdmission
from services.executor.domain.order_intake import IntakeRules
from services.executor.journal import Journal
from services.executor.order_runner import OrderRunner, RunnerConfig
from services.executor.releases import releasing_dead_letters
from services.router.outbound import reservation_lines
from tests.executor.conftest import make_order
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


class OutageStore(OrderStore):
    down = True

    async def insert_intents(self, items: Any) -> Any:
        if self.down:
            raise psycopg.errors.NumericValueOutOfRange("numeric field overflow")
        return await super().insert_intents(items)


class Cursors:
    def __init__(self) -> None:
        self.saved: dict[str, str] = {}

    async def get(self, consumer: str) -> str | None:
        return self.saved.get(consumer)

    async def set(self, consumer: str, cursor: str) -> None:
        self.saved[consumer] = cursor


async def test_a_dead_lettered_routed_trade_releases_its_reservations(db_url: str, redis_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url)
    log_ = DurableLog(sr, ORDER_EVENTS, live=LiveFeed())
    await log_.prime()
    store = OutageStore(pool)
    journal = Journal(store, r, log_, reservations.release_many, sweep_interval_s=0.2)
    runner = OrderRunner(journal=journal, venues={}, gates={}, redis=r, config=RunnerConfig())
    admission = OrderAdmission(runner, store, r, RULES, intent_retry_s=0.0)

    order = make_order(1, routed_time_ns=time.time_ns())
    routed = epb.RoutedTrade(orders=[order])
    # what the router's emit script reserved for it
    await r.eval(reservations.LUA_FUNCTIONS + "return tt_claim_line(ARGV[1])", 0, reservation_lines(routed))
    assert (await reservations.read(r, [order.follower_wallet_id]))[order.follower_wallet_id].total_usd_micro

    dead: list[str] = []

    async def record(cursor: str, item: epb.RoutedTrade, exc: BaseException) -> None:
        dead.append(cursor)

    async def stream(after: str) -> AsyncIterator[tuple[str, epb.RoutedTrade]]:
        if after < "1-0":
            yield "1-0", routed
        await asyncio.Event().wait()

    consumer: ResumableConsumer[epb.RoutedTrade] = ResumableConsumer(
        "executor", stream, admission.handle, Cursors(), start="0-0", dead_letter=releasing_dead_letters(record, r),
        backoff=Backoff(0.01, 0.02), max_handler_attempts=2)
    jtask = asyncio.create_task(journal.run())
    ctask = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: dead, timeout_s=10, message="the trade was not dead-lettered")
        assert dead == ["1-0"]
        store.down = False  # later trades insert fine; the executor keeps running (sweeps included)

        async def held() -> int:
            return (await reservations.read(r, [order.follower_wallet_id]))[order.follower_wallet_id].total_usd_micro

        async def released() -> bool:
            return await held() == 0

        try:  # a journal sweep (every 0.2 s here) releases it; the bound leaves room for load
            await eventually(released, timeout_s=10)
        except AssertionError:
            pytest.fail(f"dead-lettered order {order.client_order_id} never reached the orders table; "
                        f"its {await held()} micro-USD stay reserved forever")
    finally:
        for t in (ctask, jtask):
            t.cancel()
        await asyncio.gather(ctask, jtask, return_exceptions=True)
        await pool.close()
        await r.aclose()
        await sr.aclose()
