"""Trailing high-water marks reach PostgreSQL: after a failed save, and after a reload (PATCH) of the stop."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.conftest import GuardFactory
from tests.guard.inprocess import in_process_guard, price_tick
from tests.guard.standins import (
    StandIns,
    add_market,
    db,
    insert_trigger,
    publish_change,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import eventually

D = Decimal


async def test_failed_mark_flush_keeps_the_marks_for_the_next_flush() -> None:
    """flush_marks takes the dirty marks out of the engine before saving them: when PostgreSQL fails the
    save, the marks are gone and never saved (until the price makes a new high), so a restart loads the
    stale mark and the trailing stop sits lower than the contract's mark x (1 - trail%)."""
    spec = TriggerSpec("trg_trail", "a1", Kind.TRAILING_STOP, trail_pct=D(10))
    guard, store = in_process_guard([spec], stub_fires=True)
    guard.handle_tick(price_tick("0.50", "a1"))
    guard.handle_tick(price_tick("0.60", "a1"))
    assert guard.engine.get("trg_trail").high_water_mark == D("0.60")  # type: ignore[union-attr]
    saved: list[tuple[Decimal, list[str]]] = []
    calls = 0

    async def save_marks(marks: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("PostgreSQL unavailable")
        saved.extend(marks)

    store.save_marks = save_marks  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError):
        await guard.flush_marks()  # the periodic task logs this and tries again next period
    await guard.flush_marks()
    assert (D("0.60"), ["trg_trail"]) in saved, f"mark 0.60 never saved after the failed flush: {saved}"


@pytest.mark.integration
async def test_patch_of_a_trailing_stop_does_not_lose_its_unsaved_mark(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A trailing stop's mark rose to 0.60 (not flushed yet); the user PATCHes its trailPct. The reload keeps
    0.60 in memory but the engine no longer lists it as changed, so no flush ever writes it: PostgreSQL
    (and the next guard after a restart) keeps the old mark."""
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_trail", "TRAILING_STOP", trail="10", fraction="1")
    running = await make_guard(mark_flush_s=3600.0)  # flushed by hand below
    guard = running.guard
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.50", ask="0.52")
    await standins.ingest.tick(bid="0.60", ask="0.62")
    await eventually(lambda: (s := guard.engine.get("trg_trail")) is not None and s.high_water_mark == D("0.60"))
    # PATCH /triggers/trg_trail {"trailPct": "20"} as control writes it
    await conn.execute("UPDATE triggers SET trail_pct = 20, version = version + 1 WHERE id = 'trg_trail'")
    await publish_change(redis, "trg_trail")
    await eventually(lambda: (s := guard.engine.get("trg_trail")) is not None and s.trail_pct == D(20))
    assert guard.engine.get("trg_trail").high_water_mark == D("0.60")  # type: ignore[union-attr]
    await guard.flush_marks()
    row = await trigger_row(conn, "trg_trail")
    assert row["high_water_mark"] == D("0.60"), (
        f"mark in PostgreSQL {row['high_water_mark']} after the flush; engine holds 0.60")
    await conn.close()
