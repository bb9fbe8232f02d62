"""Performance rules read a subscription's fills only when the executor booked more of them.

The executor's booking bumps ``subscription_stats.fills_version`` with every booking of a
subscription's fills; guard keeps what the fills add up to by that version. Real PostgreSQL, real
booking code, fakes for control and the marks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from common.storage import create_pool
from services.executor.booking import book
from services.executor.model import Booking, Ticket
from services.guard.perfmon import PerfMonitor
from services.guard.perfstore import PerfStore
from tests.guard.standins import ASSET, WALLET, WALLET_ID, db, insert_subscription, now
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal


@dataclass
class FakeControl:
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str) -> bool:
        self.calls.append({"subscription_id": subscription_id, "action": action, "decision_id": decision_id})
        return True


@dataclass
class FixedMarks:
    prices: dict[str, Decimal]
    asked: list[set[str]] = field(default_factory=list)

    async def marks(self, asset_ids: Iterable[str]) -> dict[str, Decimal]:
        wanted = set(asset_ids)
        self.asked.append(wanted)
        return {a: p for a, p in self.prices.items() if a in wanted}


async def _book(db_url: str, n: int, side: int, size: str, price: str, sub_id: str = "sub_1") -> None:
    order = epb.Order(client_order_id=f"co_{n}", origin=epb.ORDER_ORIGIN_COPY, subscription_id=sub_id,
                      follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=ASSET, side=side)
    fill = Booking(f"f_{n}", D(size), D(price), D(size) * D(price), D(0), True, int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn, conn.transaction():
        await book(conn.cursor(), [(Ticket(order, "PAPER", None, 0), fill)])


async def test_fills_are_read_again_only_after_a_booking(db_url: str) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "400"})
    await _book(db_url, 1, cpb.SIDE_BUY, "1000", "0.60")
    pool = await create_pool(db_url, min_size=1, max_size=2)
    await pool.wait()
    control, marks = FakeControl(), FixedMarks({ASSET: D("0.45")})
    monitor = PerfMonitor(PerfStore(pool, now), control, marks, interval_s=60)
    for _ in range(3):  # unrealized -150: nothing to do, and the fills are read once
        assert await monitor.evaluate_all() == []
    assert (monitor.stats.evaluations, monitor.stats.fill_reads) == (3, 1)
    marks.prices[ASSET] = D("0.30")  # the mark moves: -300, still read from the kept sum
    assert await monitor.evaluate_all() == []
    assert monitor.stats.fill_reads == 1 and marks.asked[-1] == {ASSET}
    await _book(db_url, 2, cpb.SIDE_SELL, "500", "0.20")  # realized -200
    marks.prices[ASSET] = D("0.20")  # unrealized 500 x 0.2 - 300 = -200: -400 in all, the loss stop
    [decision] = await monitor.evaluate_all()
    assert monitor.stats.fill_reads == 2
    assert (decision.pnl.realized, decision.pnl.unrealized) == (D(-200), D(-200))
    assert [c["action"] for c in control.calls] == ["PAUSE"]
    version = await (await conn.execute(
        "SELECT fills_version FROM subscription_stats WHERE subscription_id = 'sub_1'")).fetchone()
    assert version is not None and version["fills_version"] == 2  # one per booking
    await pool.close()
    await conn.close()


async def test_fills_without_a_booking_version_are_read_every_time(db_url: str) -> None:
    """Fills written without the executor's booking (no stats row) are never served from memory."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", perf={"lossStopUsd": "400"})
    await conn.execute(
        "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size, price,"
        " notional_usd, venue, fill_time) VALUES ('f_x', 'sub_1', %s, 'co_x', %s, 'BUY', 1000, 0.6, 600, 'PAPER',"
        " now())", (WALLET_ID, ASSET))
    pool = await create_pool(db_url, min_size=1, max_size=2)
    await pool.wait()
    monitor = PerfMonitor(PerfStore(pool, now), FakeControl(), FixedMarks({ASSET: D("0.5")}), interval_s=60)
    await monitor.evaluate_all()
    await monitor.evaluate_all()
    assert monitor.stats.fill_reads == 2
    await pool.close()
    await conn.close()
