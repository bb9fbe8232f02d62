"""A position's life in the booking: opened by a fill (id, origin, subscription, venue), CLOSED when every
share is sold, and a new life when shares are bought again, the ended one kept in position_history."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import INSIDERS, PAPER, Ticket
from tests.executor.conftest import make_order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _fill(n: int, side: int, size: str, price: str, *, venue: str = INSIDERS, sub: str = "sub_1",
          origin: int = epb.ORDER_ORIGIN_COPY) -> tuple[Ticket, Booking]:
    order = make_order(n, follower_wallet_id="w_1", subscription_id=sub, side=side, origin=origin, outcome="Yes")
    return (Ticket(order, venue, None, time.time_ns()),
            Booking(f"fill_{n}", D(size), D(price), D(size) * D(price), D(0), True, time.time_ns() // 1_000_000))


async def _book(db_url: str, *fills: tuple[Ticket, Booking]) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, list(fills))
    finally:
        await pool.close()


async def _rows(db_url: str, sql: str) -> list[dict[str, Any]]:
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        async with pool.connection() as conn:
            return list(await (await conn.execute(sql)).fetchall())
    finally:
        await pool.close()


async def test_a_position_is_opened_closed_and_opened_again_as_a_new_life(db_url: str) -> None:
    await _book(db_url, _fill(1, cpb.SIDE_BUY, "100", "0.4"))
    [life1] = await _rows(db_url, "SELECT * FROM positions")
    assert (life1["state"], life1["origin"], life1["subscription_id"], life1["venue"], life1["outcome"]) == (
        "OPEN", "COPY", "sub_1", "INSIDERS", "Yes")
    assert life1["id"].startswith("pos_") and life1["closed_at"] is None

    await _book(db_url, _fill(2, cpb.SIDE_SELL, "100", "0.5"))
    [closed] = await _rows(db_url, "SELECT * FROM positions")
    assert (closed["state"], closed["id"], closed["size"]) == ("CLOSED", life1["id"], 0)
    assert closed["closed_at"] is not None and closed["realized_pnl_usd"] == D(10)

    # bought again, this time through SubmitOrder on the paper venue: a new life, the old one kept
    await _book(db_url, _fill(3, cpb.SIDE_BUY, "10", "0.3", venue=PAPER, sub="", origin=epb.ORDER_ORIGIN_MANUAL))
    [life2] = await _rows(db_url, "SELECT * FROM positions")
    assert life2["id"] != life1["id"]
    assert (life2["state"], life2["origin"], life2["subscription_id"], life2["venue"], life2["closed_at"]) == (
        "OPEN", "MANUAL", None, "PAPER", None)
    assert life2["realized_base_usd"] == D(10)  # this life has realized nothing yet
    [old] = await _rows(db_url, "SELECT * FROM position_history")
    assert (old["id"], old["state"], old["realized_pnl_usd"], old["origin"]) == (life1["id"], "CLOSED", D(10), "COPY")

    # more shares of an open position: the same life
    await _book(db_url, _fill(4, cpb.SIDE_BUY, "10", "0.3", venue=PAPER, sub="", origin=epb.ORDER_ORIGIN_MANUAL))
    [same] = await _rows(db_url, "SELECT id, state, size FROM positions")
    assert (same["id"], same["state"], same["size"]) == (life2["id"], "OPEN", D(20))
