"""Settling a trigger SELL on real PostgreSQL: the settle records that the executor has the order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from common.storage import create_pool
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.trigger_model import Move
from tests.guard.standins import db, insert_trigger, trigger_row
from tests.helpers import eventually

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("move", "state"), [(Move.FILL, "DONE"), (Move.FAIL, "FAILED")])
async def test_a_settle_records_submitted_at_so_no_separate_mark_is_needed(db_url: str, move: Move,
                                                                           state: str) -> None:
    conn = await db(db_url)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
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


async def test_marks_are_saved_in_small_transactions_that_a_locked_row_does_not_hold_back(db_url: str) -> None:
    conn = await db(db_url)
    locker = await db(db_url)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        for i in range(5):
            await insert_trigger(conn, f"trg_{i}", "TRAILING_STOP", trail="10", fraction="1", mark="0.5")
        await conn.execute("UPDATE triggers SET state = 'CANCELLED' WHERE id = 'trg_1'")
        store = TriggerStore(pool, lambda: datetime.now(UTC))
        async with locker.transaction():  # a fire holds the last row's lock
            await locker.execute("SELECT 1 FROM triggers WHERE id = 'trg_4' FOR UPDATE")
            saving = asyncio.create_task(store.save_marks(
                [(Decimal("0.6"), ["trg_0", "trg_1", "trg_2"]), (Decimal("0.4"), ["trg_3"]),
                 (Decimal("0.7"), ["trg_4"])], chunk=2))

            async def first_chunks_saved() -> bool:
                return (await trigger_row(conn, "trg_2"))["high_water_mark"] == Decimal("0.6")

            await eventually(first_chunks_saved)  # type: ignore[arg-type]  # committed while trg_4 is locked
            assert not saving.done()
        await asyncio.wait_for(saving, 10)
        marks = {i: (await trigger_row(conn, f"trg_{i}"))["high_water_mark"] for i in range(5)}
        # never lowered (trg_3), a trigger no longer ARMED untouched (trg_1)
        assert marks == {0: Decimal("0.6"), 1: Decimal("0.5"), 2: Decimal("0.6"), 3: Decimal("0.5"), 4: Decimal("0.7")}
    finally:
        await pool.close()
        await locker.close()
        await conn.close()
