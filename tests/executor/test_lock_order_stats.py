"""Fill booking and settlement take ``subscription_stats`` rows in key order, so two of them touching the same
subscriptions wait for each other and never deadlock.

Both lock their positions first, in (wallet, asset) order, then the stats of the subscriptions they touch. Booking
upserted them in the order its fills came (``stats`` kept their insertion order), settlement updated them in its
positions' wallet order: a batch booking sub_b then sub_a while a settlement of other positions of those
subscriptions updated sub_a then sub_b deadlocked (40P01), PostgreSQL aborting one of them after a second's wait
(the journal retries its batch; the settlement handler failed and was retried). Each transaction is held at a chosen
point by a third one that holds a stats row between the two the race is about.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from common.storage import create_pool
from services.executor.adapters.fill_store import book
from services.executor.adapters.order_store import PLANNER_OPTIONS
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration

NO = "2" * 77
OTHER = "3" * 77  # a token of another market: booked while ASSET's market settles
_n = iter(range(1, 1_000_000))
Fill = tuple[Ticket, Booking]


def _buy(wallet: str, sub: str, asset: str) -> Fill:
    n = next(_n)
    order = make_order(n, follower_wallet_id=wallet, subscription_id=sub, asset_id=asset)
    return (Ticket(order, INSIDERS, None, time.time_ns()),
            Booking(f"f_{n}", D(10), D("0.5"), D(5), D(0), True, time.time_ns() // 1_000_000))


async def _book_on(conn: psycopg.AsyncConnection[Any], fills: Sequence[Fill]) -> None:
    async with conn.transaction():
        await book(conn.cursor(), list(fills))


async def _connect(db_url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row, options=PLANNER_OPTIONS)


@pytest.fixture
async def executor_pool(db_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool planned as the executor's."""
    p = await create_pool(db_url, min_size=1, max_size=2, autocommit=True, options=PLANNER_OPTIONS)
    try:
        yield p
    finally:
        await p.close()


async def _race(db_url: str, pool: AsyncConnectionPool[Any], booking: Sequence[Fill], gate: str) -> list[str]:
    """A booking of ``booking`` held by a transaction holding ``gate``'s stats row, then the settlement of
    ASSET's market started while it waits, then the gate let go; the SQLSTATE each one ended with (booking,
    settlement; "" for none)."""
    async def book() -> None:
        async with await _connect(db_url) as conn:
            await _book_on(conn, booking)

    return await race_at_gate(
        db_url, f"SELECT 1 FROM subscription_stats WHERE subscription_id = '{gate}' FOR UPDATE", book,
        lambda: SettlementStore(pool).settle(Resolution(CONDITION, (ASSET, NO), ASSET)))


async def test_a_booking_takes_its_subscriptions_stats_in_key_order(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    # w_1 (sub_a) and w_2 (sub_b) hold ASSET; w_3 (sub_c) holds OTHER
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_a", ASSET), _buy("w_2", "sub_b", ASSET), _buy("w_3", "sub_c", OTHER)])
    # the booking's fills name sub_b, sub_c, sub_a; the settlement updates sub_a, then sub_b
    outcome = await _race(db_url, executor_pool, [_buy("w_2", "sub_b", OTHER), _buy("w_3", "sub_c", OTHER),
                                                  _buy("w_1", "sub_a", OTHER)], gate="sub_c")
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT subscription_id, copied, exposure_usd FROM subscription_stats ORDER BY 1") == [
        ("sub_a", 2, D(5)), ("sub_b", 2, D(5)), ("sub_c", 2, D(10))]


async def test_a_settlement_takes_its_subscriptions_stats_in_key_order(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    # w_1 (sub_b) and w_2 (sub_a) hold ASSET: the settlement meets sub_b first; w_3 (sub_ab) holds OTHER
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_b", ASSET), _buy("w_2", "sub_a", ASSET),
                              _buy("w_3", "sub_ab", OTHER)])
    outcome = await _race(db_url, executor_pool, [_buy("w_2", "sub_a", OTHER), _buy("w_3", "sub_ab", OTHER),
                                                  _buy("w_1", "sub_b", OTHER)], gate="sub_ab")
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT subscription_id, copied, exposure_usd FROM subscription_stats ORDER BY 1") == [
        ("sub_a", 2, D(5)), ("sub_ab", 2, D(10)), ("sub_b", 2, D(5))]
