"""Round trips a guard exit SELL costs the executor: positions closed together are checked in one query before the
watch set drops their assets, and SubmitOrder answers with the event its runner wrote, not a read of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.grpcclient import channel as grpc_channel
from common.marketstate import WATCH_POSITIONS
from common.storage import create_pool
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.journal import Journal
from services.executor.order_runner import OrderRunner, RunnerConfig
from tests.executor.conftest import (
    ASSET,
    PLAIN_ASKS,
    PLAIN_BIDS,
    Harness,
    filled_change,
    make_order,
    placed_change,
    rows,
)
from tests.helpers import INTERNAL
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration


class _CountingStore(OrderStore):
    """The production store, recording the queries that decide whether closed positions' assets are still held."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.one_by_one: list[str] = []
        self.among: list[list[str]] = []

    async def asset_held(self, asset_id: str) -> bool:
        self.one_by_one.append(asset_id)
        return await super().asset_held(asset_id)

    async def held_assets(self, among: list[str] | None = None) -> set[str]:
        if among is not None:
            self.among.append(list(among))
        return await super().held_assets(among)


class _NoVenue:
    name = "insiders"

    async def close(self) -> None:
        return None


class _Log:
    async def append_many(self, payloads: list[bytes]) -> list[str]:
        return [f"{i}-0" for i in range(len(payloads))]


async def _release(_redis: Any, ids: list[str]) -> list[int]:
    return [0] * len(ids)


@contextlib.asynccontextmanager
async def _journal(db_url: str, redis_url: str) -> AsyncIterator[tuple[Journal, _CountingStore, Any]]:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True, options=PLANNER_OPTIONS)
    redis = aioredis.from_url(redis_url, decode_responses=True)
    store = _CountingStore(pool)
    journal = Journal(store, redis, _Log(), _release, sweep_interval_s=3600,  # type: ignore[arg-type]
                      watch_repair_interval_s=3600)
    task = asyncio.create_task(journal.run())
    try:
        yield journal, store, redis
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
        await pool.close()


async def _bought(journal: Journal, store: OrderStore, redis: Any, i: int) -> None:
    """Wallet w_{i} holds 20 shares of asset_{i}, bought through the runner and the journal."""
    coid = f"co_rt_buy{i}"
    ticket = Ticket(make_order(i, client_order_id=coid, side=cpb.SIDE_BUY, asset_id=f"asset_{i}"), INSIDERS, None,
                    time.time_ns())
    life = lc.apply(lc.OrderLife(coid), lc.OrderSubmitted(D("0.50")))
    await store.insert_intents([(ticket, life)])
    runner = OrderRunner(journal=journal, venues={INSIDERS: _NoVenue()}, gates={}, redis=redis,  # type: ignore[dict-item]
                         config=RunnerConfig(poll_initial_s=3600, poll_max_s=3600))
    filled = v.VenueOrder(f"io_{i}", coid, v.CONFIRMED, D(20), D("0.50"), D(10), D(20))
    await runner.transition(ticket, life, [lc.OrderAccepted(f"io_{i}", v.MATCHED), lc.OrderFilled(D(20), D("0.50"))],
                            filled)


async def test_positions_closed_in_one_commit_are_checked_in_one_query(db_url: str, redis_url: str) -> None:
    """Three exits close three positions in one commit; another wallet still holds the third asset: one query
    finds it held, the set drops the other two and keeps it."""
    async with _journal(db_url, redis_url) as (journal, store, redis):
        for i in (1, 2, 3):
            await _bought(journal, store, redis, i)
        rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, wallet, size) "
                     "VALUES ('w_other', 'asset_3', '0xother', 5) RETURNING 1")
        assert await redis.smembers(WATCH_POSITIONS) == {"asset_1", "asset_2", "asset_3"}
        now = time.time_ns()
        placed, fills = [], []
        for i in (1, 2, 3):
            order = make_order(i, client_order_id=f"co_rt_sell{i}", side=cpb.SIDE_SELL, asset_id=f"asset_{i}",
                               amount_usd="", size="20", origin=epb.ORDER_ORIGIN_TRIGGER, trigger_id=f"trg_{i}")
            t = Ticket(order, INSIDERS, None, now)
            life = lc.apply(lc.OrderLife(t.client_order_id), lc.OrderSubmitted(D("0.49")))
            await store.insert_intents([(t, life)])
            change, after = placed_change(t, life, now)
            placed.append(change)
            fills.append(filled_change(t, after, "20", now))
        await journal.write(placed)
        store.one_by_one.clear()
        store.among.clear()
        await journal.write(fills)
        await asyncio.sleep(0.05)  # the post-commit step follows the commit's answer
        assert rows(db_url, "SELECT asset_id, size FROM positions WHERE follower_wallet_id <> 'w_other' "
                            "ORDER BY asset_id") == [("asset_1", D(0)), ("asset_2", D(0)), ("asset_3", D(0))]
        assert (store.one_by_one, store.among) == ([], [["asset_1", "asset_2", "asset_3"]])
        assert await redis.smembers(WATCH_POSITIONS) == {"asset_3"}


async def test_submit_order_answers_with_the_event_written_without_reading_it_back(harness: Harness,
                                                                                   db_url: str) -> None:
    """A new exit's answer is its runner's event as stored, with no read of ``order_events``; a duplicate's is read."""
    await harness.set_book(ASSET, PLAIN_BIDS, PLAIN_ASKS)
    running = await harness.start_executor()
    store = running.admission.store
    reads: list[str] = []
    read = store.last_event

    async def counted(coid: str) -> epb.OrderEvent | None:
        reads.append(coid)
        return await read(coid)
    store.last_event = counted  # type: ignore[method-assign,assignment]
    channel = grpc_channel(f"127.0.0.1:{running.server.port}", INTERNAL)
    stub = egrpc.ExecutorServiceStub(channel)
    try:
        exit_ = make_order(1, origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL, amount_usd="", size="5",
                           trigger_id="trg_1", leader_trade_id="")
        first = await stub.SubmitOrder(epb.SubmitOrderRequest(order=exit_))
        assert (first.duplicate, reads) == (False, [])
        [(payload,)] = rows(db_url, "SELECT payload FROM order_events WHERE event_id = %s", first.last_event.event_id)
        assert epb.OrderEvent.FromString(payload) == first.last_event
        assert first.last_event.type == epb.ORDER_EVENT_TYPE_PLACED
        second = await stub.SubmitOrder(epb.SubmitOrderRequest(order=exit_))
        assert (second.duplicate, reads) == (True, [exit_.client_order_id])
    finally:
        await channel.close(None)
