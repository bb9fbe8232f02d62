"""The router counts a batch's skips in ``subscription_stats`` taking the rows in key order, as the executor's fill
booking does, so the two never deadlock.

The skip counts were upserted in the order their GROUP BY gave them (a hash aggregate's: no order), while a booking
takes its subscriptions' rows in key order: a router batch skipping sub_c and sub_d, taking sub_d first, and a
booking of sub_c, sub_cg and sub_d deadlocked (40P01), PostgreSQL aborting one of them after a second's wait (the
router's persist of trades it had emitted already failed). The booking is held at a chosen point by a third
transaction that holds sub_cg's row.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from common.storage import create_pool
from services.executor.adapters.fill_store import book
from services.executor.adapters.order_store import PLANNER_OPTIONS as EXECUTOR_OPTIONS
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import INSIDERS, Ticket
from services.router.adapters.store import RoutedRow, RouterStore
from services.router.adapters.store_sql import PLANNER_OPTIONS
from tests.executor.conftest import make_order
from tests.helpers import eventually
from tests.lock_race import lock_waiters

pytestmark = pytest.mark.integration

_n = iter(range(1, 1_000_000))
Fill = tuple[Ticket, Booking]


def _buy(sub: str, asset: str) -> Fill:
    n = next(_n)
    order = make_order(n, follower_wallet_id=f"w_{sub}", subscription_id=sub, asset_id=asset)
    return (Ticket(order, INSIDERS, None, time.time_ns()),
            Booking(f"f_{n}", D(10), D("0.5"), D(5), D(0), True, time.time_ns() // 1_000_000))


async def _book_on(conn: psycopg.AsyncConnection[Any], fills: list[Fill]) -> None:
    async with conn.transaction():
        await book(conn.cursor(), fills)


async def _connect(db_url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row, options=EXECUTOR_OPTIONS)


@pytest.fixture
async def router_store(db_url: str) -> AsyncIterator[RouterStore]:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True, options=PLANNER_OPTIONS)
    store = RouterStore(pool)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


def _skips(subs: list[str]) -> RoutedRow:
    return RoutedRow(leader_trade_id="lt_skips", leader_wallet="0xleader", asset_id="111", condition_id="0xc",
                     side="BUY", payload=b"\x00", leader_delta=None, skip_subs=subs,
                     skip_wallets=[f"w_{s}" for s in subs], skip_reasons=["PRICE_ABOVE_MAX"] * len(subs),
                     skip_details=[""] * len(subs))


async def test_a_batchs_skips_take_their_subscriptions_stats_in_key_order(
        db_url: str, router_store: RouterStore) -> None:
    subs = ["sub_c", "sub_cg", "sub_d"]
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy(s, "a1") for s in subs])
    async with await _connect(db_url) as gate, await _connect(db_url) as booking:
        async with gate.transaction():
            await gate.execute("SELECT 1 FROM subscription_stats WHERE subscription_id = 'sub_cg' FOR UPDATE")
            booked = asyncio.create_task(_book_on(booking, [_buy(s, "a2") for s in subs]))
            await eventually(lambda: booked.done() or lock_waiters(db_url) == 1)
            persisted = asyncio.create_task(router_store.persist_many([_skips(["sub_c", "sub_d"])]))
            await eventually(lambda: persisted.done() or lock_waiters(db_url) == 2)
        outcome = await asyncio.gather(booked, persisted, return_exceptions=True)
    assert [getattr(r, "sqlstate", "") if isinstance(r, BaseException) else "" for r in outcome] == ["", ""]
    assert outcome[1] == {"lt_skips"}
    with psycopg.connect(db_url) as conn:
        stats = conn.execute("SELECT subscription_id, copied, skipped FROM subscription_stats ORDER BY 1").fetchall()
    assert stats == [("sub_c", 2, 1), ("sub_cg", 2, 0), ("sub_d", 2, 1)]
