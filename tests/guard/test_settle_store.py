"""Settling a trigger SELL on real PostgreSQL: the settle records that the executor has the order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from common.storage import create_pool
from services.guard.model import Move
from services.guard.store import TriggerStore
from tests.guard.standins import db, insert_trigger, trigger_row

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("move", "state"), [(Move.FILL, "DONE"), (Move.FAIL, "FAILED")])
async def test_a_settle_records_submitted_at_so_no_separate_mark_is_needed(db_url: str, move: Move,
                                                                           state: str) -> None:
    conn = await db(db_url)
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        await insert_trigger(conn, "trg_1", "STOP_LOSS", price="0.3", fraction="1")
        await conn.execute("UPDATE triggers SET state = 'FIRED', order_id = 'co_1', fire_count = 1 WHERE id = 'trg_1'")
        store = TriggerStore(pool, lambda: datetime.now(UTC))
        assert await store.settle("trg_1", "co_other", move, "X", Decimal(1), Decimal("0.3")) is None
        assert (await trigger_row(conn, "trg_1"))["submitted_at"] is None  # not this order: nothing changed
        row = await store.settle("trg_1", "co_1", move, "X", Decimal(1), Decimal("0.3"))
        assert row is not None and row.state.value == state
        stored = await trigger_row(conn, "trg_1")
        assert stored["state"] == state and stored["submitted_at"] is not None
        first = stored["submitted_at"]
        assert await store.settle("trg_1", "co_1", move, "X", Decimal(1), Decimal("0.3")) is None  # settled once
        assert (await trigger_row(conn, "trg_1"))["submitted_at"] == first
    finally:
        await pool.close()
        await conn.close()
