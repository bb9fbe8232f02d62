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


async def _history(db_url: str) -> list[tuple[str, str, D]]:
    rows = await _rows(db_url, "SELECT id, state, realized_pnl_usd FROM position_history ORDER BY closed_at, id")
    return [(h["id"], h["state"], h["realized_pnl_usd"]) for h in rows]


async def test_a_life_closed_and_another_opened_in_one_booking_are_both_kept(db_url: str) -> None:
    """The journal books every fill confirmed within its interval at once: the exit SELL of a life and the BUY
    that opens the next one can share a booking, and the ended life (+$10) must still be kept."""
    await _book(db_url, _fill(1, cpb.SIDE_BUY, "100", "0.4"))
    [life1] = await _rows(db_url, "SELECT id FROM positions")

    await _book(db_url, _fill(2, cpb.SIDE_SELL, "100", "0.5"), _fill(3, cpb.SIDE_BUY, "10", "0.3"))
    [life2] = await _rows(db_url, "SELECT id, state, size, realized_pnl_usd, realized_base_usd FROM positions")
    assert life2["id"] != life1["id"]
    assert (life2["state"], life2["size"], life2["realized_pnl_usd"] - life2["realized_base_usd"]) == (
        "OPEN", D(10), D(0))
    assert await _history(db_url) == [(life1["id"], "CLOSED", D(10))]

    # and a life that both starts and ends inside one booking, between two others
    await _book(db_url, _fill(4, cpb.SIDE_SELL, "10", "0.4"), _fill(5, cpb.SIDE_BUY, "20", "0.5"),
                _fill(6, cpb.SIDE_SELL, "20", "0.6"), _fill(7, cpb.SIDE_BUY, "5", "0.5"))
    history = await _history(db_url)
    assert [(state, pnl) for _, state, pnl in history] == [("CLOSED", D(10)), ("CLOSED", D(1)), ("CLOSED", D(2))]
    assert history[1][0] == life2["id"] and len({h[0] for h in history}) == 3
    [life4] = await _rows(db_url, "SELECT id, state, size FROM positions")
    assert (life4["state"], life4["size"]) == ("OPEN", D(5)) and life4["id"] not in {h[0] for h in history}


async def test_the_journal_write_keeps_a_life_closed_and_reopened_in_one_flush(db_url: str) -> None:
    """The same through the journal's write of one flush (the orders' changes, then their fills)."""
    from services.executor.adapters.order_store import Change, OrderStore
    from services.executor.domain import order_lifecycle as lc

    await _book(db_url, _fill(1, cpb.SIDE_BUY, "100", "0.4"))
    [life1] = await _rows(db_url, "SELECT id FROM positions")
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        changes = []
        for t, b in (_fill(2, cpb.SIDE_SELL, "100", "0.5"), _fill(3, cpb.SIDE_BUY, "10", "0.3")):
            life = lc.OrderLife(t.client_order_id, lc.State.FILLED, "v", "confirmed", filled_size=b.size,
                                avg_price=b.price)
            changes.append(Change(t, life, None, b))
        _inserted, booked = await OrderStore(pool).apply([], changes)
    finally:
        await pool.close()
    assert [b.effect.realized_pnl_usd for b in booked] == [D(10), D(0)]
    assert await _history(db_url) == [(life1["id"], "CLOSED", D(10))]


def _leg(n: int, side: int, wallet: str = "w_1", asset: str = "") -> tuple[Ticket, Booking]:
    order = make_order(n, follower_wallet_id=wallet, side=B if side == F else side,
                       **({"asset_id": asset} if asset else {}))
    size, fee = (D(0), D(1)) if side == F else (D(1), D(0))  # F: a BUY's fee alone, which may take the last shares
    return (Ticket(order, INSIDERS, None, 0), Booking(f"fill_{n}", size, D("0.5"), size / 2, fee, True, 0))


B, S, F = cpb.SIDE_BUY, cpb.SIDE_SELL, -1


@pytest.mark.parametrize(("legs", "cut"), [
    ([], []),
    ([(B, "w_1")], [1]),
    ([(B, "w_1"), (S, "w_1")], [2]),
    ([(S, "w_1"), (B, "w_1")], [1, 1]),  # sold, then bought again: apart
    ([(S, "w_1"), (B, "w_2"), (S, "w_2")], [3]),  # other positions: together
    ([(S, "w_1"), (B, "w_2"), (B, "w_1"), (S, "w_1"), (B, "w_1")], [2, 2, 1]),
    ([(B, "w_1"), (B, "w_1"), (S, "w_1"), (S, "w_1")], [4]),
    ([(F, "w_1"), (B, "w_1")], [1, 1]),  # a fee beyond its fill, then bought again: apart
    ([(B, "w_1"), (F, "w_1"), (B, "w_2"), (S, "w_1")], [4]),  # nothing bought again after the fee: together
])
def test_lives_apart_cuts_before_a_buy_of_a_position_sold_earlier_in_the_part(
        legs: list[tuple[int, str]], cut: list[int]) -> None:
    fills = [_leg(i, side, wallet) for i, (side, wallet) in enumerate(legs)]
    parts = fill_store.lives_apart(fills)
    assert [len(p) for p in parts] == cut
    assert [f for p in parts for f in p] == fills  # nothing lost, nothing reordered



async def test_a_new_life_has_no_venue_count_until_it_is_reconciled(db_url: str) -> None:
    """The venue counted 100 shares of the life before (its reconciliation's columns): a new life of 10 shows no
    count until it is reconciled, not those 100; the ended life keeps its own."""
    await _book(db_url, _fill(1, cpb.SIDE_BUY, "100", "0.4"))
    await _rows(db_url, "UPDATE positions SET venue_shares = 100, reconciled_at = now() RETURNING id")
    await _book(db_url, _fill(2, cpb.SIDE_SELL, "100", "0.5"))
    await _book(db_url, _fill(3, cpb.SIDE_BUY, "10", "0.5"))
    [life2] = await _rows(db_url, "SELECT state, size, venue_shares, reconciled_at FROM positions")
    assert (life2["state"], life2["size"], life2["venue_shares"], life2["reconciled_at"]) == ("OPEN", D(10), None, None)
    [old] = await _rows(db_url, "SELECT state, venue_shares FROM position_history")
    assert (old["state"], old["venue_shares"]) == ("CLOSED", D(100))
