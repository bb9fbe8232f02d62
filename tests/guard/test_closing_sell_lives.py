"""The SELL that leaves a position nothing (read before any later BUY) ends the triggers of the life it closed, and
only those: a stop set after the close is the next life's; one set before the life opened, or during it, is the
life's. Read again (a restart, the stream delivering it twice), it changes nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.guard.adapters.exit_store import ExitStore
from tests.guard.standins import ASSET, WALLET_ID, db, insert_trigger, set_position, trigger_row

pytestmark = pytest.mark.integration


async def _closed(conn: Any) -> datetime:
    """The executor books the SELL that sells the life to zero: the row kept, CLOSED; the close's time."""
    row = await (await conn.execute(
        "UPDATE positions SET size = 0, state = 'CLOSED', closed_at = now() WHERE follower_wallet_id = %s"
        " RETURNING closed_at", (WALLET_ID,))).fetchone()
    closed: datetime = row["closed_at"]
    return closed


async def test_the_closing_sell_keeps_a_stop_set_after_the_close_and_ends_the_lifes_own(
        db_url: str, exit_store: ExitStore) -> None:
    conn = await db(db_url)
    await insert_trigger(conn, "trg_before", "STOP_LOSS", price="0.25", size="40",
                         created=datetime.now(UTC) - timedelta(minutes=1))  # nothing held yet: life 1's
    await set_position(conn, "100", "0.40")
    await insert_trigger(conn, "trg_during", "STOP_LOSS", price="0.30", fraction="1")
    closed_at = await _closed(conn)
    await insert_trigger(conn, "trg_after", "STOP_LOSS", price="0.20", size="50",
                         created=closed_at + timedelta(milliseconds=5))
    change = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    states = {t: (await trigger_row(conn, t))["state"] for t in ("trg_before", "trg_during", "trg_after")}
    again = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    after = (await trigger_row(conn, "trg_after"))["state"]
    await conn.close()
    assert (change.outcome, [r.id for r in change.cancelled]) == ("POSITION_CLOSED", ["trg_before", "trg_during"])
    assert states == {"trg_before": "CANCELLED", "trg_during": "CANCELLED", "trg_after": "ARMED"}
    assert (again.outcome, again.cancelled, after) == ("NO_POSITION", (), "ARMED")


async def test_a_position_sold_to_zero_without_a_recorded_close_ends_every_stop(
        db_url: str, exit_store: ExitStore) -> None:
    """A row at zero that recorded no close (not CLOSED): nothing tells a later stop from the life's, all end."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await insert_trigger(conn, "trg_during", "STOP_LOSS", price="0.30", fraction="1")
    await set_position(conn, "0", "0.40")
    await insert_trigger(conn, "trg_after", "STOP_LOSS", price="0.20", size="50")
    change = await exit_store.on_sell_fill(WALLET_ID, ASSET)
    await conn.close()
    assert sorted(r.id for r in change.cancelled) == ["trg_after", "trg_during"]
