"""Booking writes each fill's fee shares into ``fills``: guard's PnL, folded from those rows, holds what the
executor's positions hold."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import PAPER, Ticket
from services.guard.adapters.perf_store import PerfStore
from services.guard.domain import perf_rules
from tests.executor.conftest import make_order
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration


def _ticket(i: int, side: int) -> Ticket:
    return Ticket(make_order(i, follower_wallet_id="w_1", subscription_id="sub_1", side=side), PAPER, None,
                  time.time_ns())


@pytest.mark.parametrize(("buy_fee", "sell_fee", "fees", "realized"), [
    ("2", "0", [D(2), D(0)], D(-1)),
    ("0", "0", [D(0), D(0)], D(0)),
    ("2", "0.5", [D(2), D(0)], D(-1)),  # a SELL's fee is not taken in shares: the row keeps 0
])
async def test_fills_keep_the_fee_shares_of_a_buy(db_url: str, buy_fee: str, sell_fee: str, fees: list[D],
                                                  realized: D) -> None:
    now_ms = time.time_ns() // 1_000_000
    # BUY 100 @ 0.50, then SELL what the position holds @ 0.50
    buy = (_ticket(1, cpb.SIDE_BUY), Booking("fill_1", D(100), D("0.5"), D(50), D(buy_fee), True, now_ms))
    held = D(100) - D(buy_fee)
    sell = (_ticket(2, cpb.SIDE_SELL), Booking("fill_2", held, D("0.5"), held / 2, D(sell_fee), True, now_ms + 1))
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            booked = await fill_store.book(cur, [buy, sell])
        assert [b.effect.position.size for b in booked] == [held, D(0)]
        async with pool.connection() as conn:
            rows = await (await conn.execute("SELECT side, fee_shares FROM fills ORDER BY fill_time")).fetchall()
            position = await (await conn.execute("SELECT size, realized_pnl_usd FROM positions")).fetchone()
        assert [(r["side"], r["fee_shares"]) for r in rows] == [("BUY", fees[0]), ("SELL", fees[1])]
        assert position is not None and position["size"] == 0
        assert abs(position["realized_pnl_usd"] - realized) < D("0.000001")  # the average price is rounded
        # guard folds the same rows to the same holding and PnL
        fills, _ = await PerfStore(pool, lambda: datetime.now(UTC)).fills_since("sub_1", None)
        assert [f.fee_shares for f in fills] == fees
        assert perf_rules.fold(fills) == perf_rules.Ledger(realized, {})
    finally:
        await pool.close()
