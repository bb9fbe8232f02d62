"""The executor keeps, per wallet and UTC day, the day's realized PnL and the lowest point it went down to
(``wallet_day_pnl``), in the transaction that books it: fills and settlements alike. The router's daily loss limit
reads that lowest point, so a gain realized later the same day does not start copied BUYs again."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.executor.adapters.day_pnl import day_rows
from services.executor.adapters.fill_store import book
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration

BUY, SELL = cpb.SIDE_BUY, cpb.SIDE_SELL
NO = "2" * 77
_n = iter(range(1, 1_000_000))
Fill = tuple[Ticket, Booking]
DAY_ROWS = "SELECT follower_wallet_id, realized_usd, low_usd FROM wallet_day_pnl ORDER BY 1"


def _fill(asset: str, side: int, size: str, price: str, wallet: str = "w_1") -> Fill:
    n = next(_n)
    order = make_order(n, follower_wallet_id=wallet, subscription_id="sub_1", asset_id=asset, side=side)
    return (Ticket(order, INSIDERS, None, time.time_ns()),
            Booking(f"f_{n}", D(size), D(price), D(size) * D(price), D(0), True, time.time_ns() // 1_000_000))


async def _book_on(conn: psycopg.AsyncConnection[Any], *fills: Fill) -> None:
    async with conn.transaction():
        await book(conn.cursor(), list(fills))


async def _book(db_url: str, *fills: Fill) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn:
        await _book_on(conn, *fills)


def _waits_for_a_lock(db_url: str, pid: int) -> bool:
    return bool(rows(db_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", pid))


@pytest.mark.parametrize(("steps", "expected"), [
    ([("w_1", "-300"), ("w_1", "49")], [("w_1", "-251", "-300")]),
    ([("w_1", "49"), ("w_1", "-300")], [("w_1", "-251", "-251")]),
    ([("w_2", "0"), ("w_1", "5"), ("w_2", "-1"), ("w_1", "0")], [("w_1", "5", "0"), ("w_2", "-1", "-1")]),
    ([("w_1", "0")], []),
])
def test_a_bookings_day_rows_are_each_wallets_sum_and_lowest_running_sum(steps: list[tuple[str, str]],
                                                                        expected: list[tuple[str, str, str]]) -> None:
    rows_ = day_rows((w, D(x)) for w, x in steps)
    assert [(r["w"], D(r["net"]), D(r["low"])) for r in rows_] == [(w, D(n), D(lo)) for w, n, lo in expected]


async def test_fills_that_realize_nothing_write_no_day_row(db_url: str) -> None:
    await _book(db_url, _fill("a1", BUY, "100", "0.5"), _fill("a2", BUY, "10", "0.5", wallet="w_2"))
    assert rows(db_url, DAY_ROWS) == []


async def test_the_lowest_point_of_the_day_is_kept_across_bookings_and_wallets(db_url: str) -> None:
    await _book(db_url, _fill("a1", BUY, "1000", "0.5"), _fill("a2", BUY, "100", "0.5"),
                _fill("a1", BUY, "10", "0.5", wallet="w_2"))
    # in one booking, in the fills' order: w_1 -300 then +49; w_2 +1
    await _book(db_url, _fill("a1", SELL, "1000", "0.2"), _fill("a1", SELL, "10", "0.6", wallet="w_2"),
                _fill("a2", SELL, "100", "0.99"))
    assert rows(db_url, DAY_ROWS) == [("w_1", D("-251"), D("-300")), ("w_2", D("1"), D("0"))]
    await _book(db_url, _fill("a1", BUY, "100", "0.5"))
    await _book(db_url, _fill("a1", SELL, "100", "0.6"))  # +10: the low stays
    assert rows(db_url, DAY_ROWS)[0] == ("w_1", D("-241"), D("-300"))
    # the day's realized PnL is the positions' (what the router read alone before)
    assert rows(db_url, "SELECT sum(pnl_day_realized_usd) FROM positions WHERE follower_wallet_id = 'w_1'") == [
        (D("-241"),)]


@pytest.mark.parametrize(("second_price", "day"), [("0.99", (D("-251"), D("-300"))),  # +49 after -300
                                                   ("0.2", (D("-330"), D("-330")))])  # -30 after -300
async def test_two_positions_of_one_wallet_booked_at_once_both_count(db_url: str, second_price: str,
                                                                     day: tuple[D, D]) -> None:
    await _book(db_url, _fill("a1", BUY, "1000", "0.5"), _fill("a2", BUY, "100", "0.5"))
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as first, \
            await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as second:
        async with first.transaction():
            await book(first.cursor(), [_fill("a1", SELL, "1000", "0.2")])  # -300, not committed yet
            later = asyncio.create_task(_book_on(second, _fill("a2", SELL, "100", second_price)))
            await eventually(lambda: later.done() or _waits_for_a_lock(db_url, second.info.backend_pid))
            assert not later.done()  # it waits for the first one's day row
        await later
    assert rows(db_url, DAY_ROWS) == [("w_1", *day)]


async def test_a_loss_realized_at_settlement_counts_in_the_days_lowest_point(pool: AsyncConnectionPool[Any],
                                                                            db_url: str) -> None:
    await _book(db_url, _fill(ASSET, BUY, "100", "0.40"), _fill("a2", BUY, "100", "0.5"))
    settled = await SettlementStore(pool).settle(Resolution(CONDITION, (ASSET, NO), NO))  # -40: the cost lost
    assert [s.state for s in settled.settled] == ["RESOLVED_LOST"]
    await _book(db_url, _fill("a2", SELL, "100", "0.6"))  # +10 later the same day
    assert rows(db_url, DAY_ROWS) == [("w_1", D("-30"), D("-40"))]
    assert rows(db_url, "SELECT DISTINCT pnl_day = d.day FROM positions, wallet_day_pnl d") == [(True,)]
