"""The daily loss limit's input across services: what the executor books is what the router reads.

The executor keeps each position's realized PnL of the UTC day (``positions.pnl_day*``) as it books
fills; the router sums it per wallet in its batch load. Both on a real, migrated PostgreSQL.
"""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from services.executor.adapters.fill_store import book
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from services.router.adapters.store import RouterStore
from services.router.domain.positions import utc_day_start_ms
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

D = Decimal


def _fill(n: int, wallet: str, asset: str, side: int, size: str, price: str) -> tuple[Ticket, Booking]:
    order = epb.Order(client_order_id=f"co_{n}", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_1",
                      follower_wallet_id=wallet, follower_proxy="0xproxy", asset_id=asset, condition_id="0xc",
                      side=side)
    return (Ticket(order, "PAPER", None, 0),
            Booking(f"f_{n}", D(size), D(price), D(size) * D(price), D(0), True, int(time.time() * 1000)))


async def _book(db_url: str, fills: list[tuple[Ticket, Booking]]) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn, conn.transaction():
        await book(conn.cursor(), fills)


async def _realized_today(store: RouterStore, wallets: list[str]) -> dict[str, Decimal]:
    today = utc_day_start_ms(time.time_ns() // 1_000_000)
    batch = await store.load_batch(leader_trade_ids=["lt_x"], wallets=wallets, markets=["0xc"], assets=["a1"],
                                   leader_assets=[], pnl_day_ms=today, funding_wallets=[])
    return batch.realized_today


async def test_booked_losses_and_gains_of_the_day_add_up_per_wallet(store: RouterStore, db_url: str) -> None:
    await _book(db_url, [_fill(1, "w_1", "a1", cpb.SIDE_BUY, "100", "0.40"),
                         _fill(2, "w_1", "a2", cpb.SIDE_BUY, "10", "0.50"),
                         _fill(3, "w_2", "a1", cpb.SIDE_BUY, "10", "0.50")])
    assert await _realized_today(store, ["w_1", "w_2"]) == {"w_1": D(0), "w_2": D(0)}  # buys realize nothing
    await _book(db_url, [_fill(4, "w_1", "a1", cpb.SIDE_SELL, "50", "0.30")])  # -5
    await _book(db_url, [_fill(5, "w_1", "a2", cpb.SIDE_SELL, "10", "0.70"),  # +2, closes the position
                         _fill(6, "w_1", "a1", cpb.SIDE_SELL, "50", "0.20")])  # -10, closes the position
    assert await _realized_today(store, ["w_1", "w_2", "w_3"]) == {"w_1": D("-13"), "w_2": D(0)}


async def test_a_new_day_starts_from_zero(store: RouterStore, db_url: str) -> None:
    await _book(db_url, [_fill(1, "w_1", "a1", cpb.SIDE_BUY, "100", "0.40"),
                         _fill(2, "w_1", "a1", cpb.SIDE_SELL, "10", "0.20")])  # -2 today
    with psycopg.connect(db_url) as conn:  # as if that loss had been booked yesterday
        conn.execute("UPDATE positions SET pnl_day = pnl_day - 1")
        conn.execute("UPDATE wallet_day_pnl SET day = day - 1")
    assert await _realized_today(store, ["w_1"]) == {}
    await _book(db_url, [_fill(3, "w_1", "a1", cpb.SIDE_SELL, "10", "0.30")])  # -1 today
    assert await _realized_today(store, ["w_1"]) == {"w_1": D("-1")}
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT realized_pnl_usd FROM positions WHERE follower_wallet_id = 'w_1'").fetchone()
    assert row is not None and row[0] == D("-3")  # the lifetime figure keeps both days
