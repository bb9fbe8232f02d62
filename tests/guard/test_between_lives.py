"""A trigger set between two lives of a position (the row CLOSED, nothing held: a size trigger may be set before the
shares are held) is the next life's: no SELL of that life cancels it as an ended life's, while the triggers set
during a life that ended (manual or copy exits) are still cancelled when its closing SELL is read late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.guard.adapters.exit_store import ExitStore
from services.guard.domain.exit_plans import CopyFill
from tests.guard.standins import (
    ASSET,
    WALLET,
    WALLET_ID,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
    trigger_row,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(exit_store: ExitStore) -> ExitStore:
    return exit_store


async def _close(conn: Any) -> None:
    """The life's shares are all sold: the executor keeps the row, CLOSED, with the life's opening time."""
    await conn.execute("UPDATE positions SET size = 0, state = 'CLOSED', closed_at = now() WHERE follower_wallet_id"
                       " = %s", (WALLET_ID,))


async def _open_next(conn: Any, size: str, n: int) -> None:
    """A BUY opens life ``n``: the ended life is archived in position_history first, as the executor's booking
    does."""
    await conn.execute(
        "INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state, origin, venue,"
        " size, avg_price, cost_usd, realized_pnl_usd, opened_at, closed_at, updated_at)"
        " SELECT %s, follower_wallet_id, asset_id, condition_id, wallet, state, origin, venue, size, avg_price,"
        " cost_usd, 0, opened_at, coalesce(closed_at, now()), updated_at FROM positions WHERE follower_wallet_id = %s",
        (f"pos_life{n - 1}", WALLET_ID))
    await conn.execute("UPDATE positions SET size = %s, cost_usd = %s * 0.4, state = 'OPEN', closed_at = NULL,"
                       " opened_at = now() + interval '1 second' WHERE follower_wallet_id = %s",
                       (Decimal(size), Decimal(size), WALLET_ID))


async def _sell_leaving(conn: Any, store: ExitStore, size: str) -> Any:
    """A SELL of the life open now fills, ``size`` shares left; guard reads it."""
    await set_position(conn, size, "0.40")
    return await store.on_sell_fill(WALLET_ID, ASSET)


async def test_a_stop_set_between_lives_survives_a_partial_sell_of_the_new_life(db_url: str, store: ExitStore) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")  # life 1 (terminal: no exits group)
    await _close(conn)
    await insert_trigger(conn, "trg_next_life", "STOP_LOSS", price="0.30", size="40")  # holding nothing
    await _open_next(conn, "50", 2)
    change = await _sell_leaving(conn, store, "40")  # a manual SELL of 10 of life 2
    row = await trigger_row(conn, "trg_next_life")
    await conn.close()
    assert (change.outcome, [r.id for r in change.cancelled]) == ("OPEN", [])
    assert row["state"] == "ARMED", row["state_reason"]


async def test_a_stop_that_recorded_the_closed_row_of_the_life_before_ends_with_that_life(
        db_url: str, store: ExitStore) -> None:
    """Set between lives while control recorded the CLOSED row's opening time (before it recorded only an OPEN
    position's): only the database's clock decides a trigger's life, so it counts as the life before's and the next
    partial SELL cancels it (visible, never sold on), rather than comparing control's clock with the close."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await _close(conn)
    await insert_trigger(conn, "trg_next_life", "STOP_LOSS", price="0.30", size="40")
    await conn.execute("UPDATE triggers SET position_opened_at = (SELECT opened_at FROM positions"
                       " WHERE follower_wallet_id = %s) WHERE id = 'trg_next_life'", (WALLET_ID,))
    await _open_next(conn, "50", 2)
    change = await _sell_leaving(conn, store, "40")
    row = await trigger_row(conn, "trg_next_life")
    await conn.close()
    assert [r.id for r in change.cancelled] == ["trg_next_life"]
    assert row["state"] == "CANCELLED"


async def test_a_late_closing_sell_cancels_the_ended_lifes_stops_and_keeps_one_set_between_lives(
        db_url: str, store: ExitStore) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await set_position(conn, "100", "0.40")  # life 1, copied: its exits, and a manual stop
    life1 = await store.on_buy_fill(CopyFill(WALLET_ID, WALLET, ASSET, "sub_1", "co_buy1", Decimal(100),
                                             Decimal("0.40")), Decimal("0.01"))
    assert life1.created
    await insert_trigger(conn, "trg_old_life", "STOP_LOSS", price="0.30", fraction="1")
    await _close(conn)
    await insert_trigger(conn, "trg_next_life", "STOP_LOSS", price="0.20", size="40")
    await _open_next(conn, "50", 2)
    change = await store.on_sell_fill(WALLET_ID, ASSET)  # life 1's closing SELL, read after life 2 opened
    assert change.outcome == "POSITION_CLOSED"
    assert sorted(r.id for r in change.cancelled) == sorted(["trg_old_life", *(r.id for r in life1.created)])
    assert (await trigger_row(conn, "trg_next_life"))["state"] == "ARMED"
    assert await store.group(WALLET_ID, ASSET) is None
    await conn.close()


async def test_a_stop_that_recorded_no_life_is_an_ended_lifes_when_set_before_the_archived_life_closed(
        db_url: str, store: ExitStore) -> None:
    """Set before life 1 opened (no life recorded), for life 1: once life 1 is archived as ended, a SELL of life 2
    cancels it, with no other trigger to tell that the position was opened again."""
    conn = await db(db_url)
    await insert_trigger(conn, "trg_before", "STOP_LOSS", price="0.30", size="40",
                         created=datetime.now(UTC) - timedelta(minutes=1))
    await set_position(conn, "100", "0.40")
    await _close(conn)
    await _open_next(conn, "50", 2)
    change = await _sell_leaving(conn, store, "40")
    assert [r.id for r in change.cancelled] == ["trg_before"]
    assert (await trigger_row(conn, "trg_before"))["state_reason"] == "POSITION_CLOSED"
    await conn.close()
