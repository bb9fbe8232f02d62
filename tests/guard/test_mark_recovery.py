"""A crash loses the trailing marks risen since guard's last complete mark save, and the prices logged while guard was
down lift nothing: a restarted guard took the stored mark, so a stop sold later than mark × (1 − trail%), or never.
At start-up guard now lifts its stops by the tick log's prices since that save (real PostgreSQL and Redis, the log
read straight from Redis, stand-in executor)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import BookSnapshot, write_book
from common.streams import PRICE_TICKS
from services.guard.adapters.mark_replay import MARKS_THROUGH_KEY
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    StandIns,
    add_market,
    db,
    insert_trigger,
    set_position,
    trigger_row,
)
from tests.helpers import eventually

pytestmark = pytest.mark.integration

D = Decimal
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


async def _last_cursor(standins: StandIns) -> str:
    """The cursor of the log's newest entry."""
    rows = await standins.ingest.log.redis.xrevrange(PRICE_TICKS, count=1)
    return bytes(rows[0][0]).decode()


async def _guarded(db_url: str, redis: Any, *, created: datetime = HOUR_AGO) -> Any:
    """A position of 100 shares and its trailing stop: 10 %, stored mark 0.55 (level 0.495), armed an hour ago."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", fraction="1", mark="0.55", created=created)
    return conn


async def test_a_restart_takes_back_the_mark_the_crash_lost_and_sells_at_it(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The last save covered the log up to the 0.50 tick; the 0.60 after it lifted the mark (level 0.54) in the
    process that crashed before saving it. The restarted guard reads the 0.60 again from the log: its mark is 0.60, it
    is saved, and the 0.53 that follows sells (the stored 0.55 would have held until 0.495)."""
    conn = await _guarded(db_url, redis)
    await standins.ingest.tick(bid="0.50", ask="0.52", age_s=3)
    await redis.set(MARKS_THROUGH_KEY, await _last_cursor(standins))  # what the crashed process saved
    await standins.ingest.tick(bid="0.60", ask="0.62", age_s=2)  # risen, never saved
    await standins.ingest.tick(bid="0.58", ask="0.60", age_s=1)

    running = await make_guard(tick_source="log")
    spec = running.guard.engine.get("trg_tr")
    assert spec is not None and spec.high_water_mark == D("0.60"), "the mark the crash lost was not taken back"
    assert running.guard.stats.marks_recovered == 1
    assert running.guard.stats.marks_log_trimmed == 0

    async def saved() -> bool:
        return (await trigger_row(conn, "trg_tr"))["high_water_mark"] == D("0.60")

    await eventually(saved, message="the mark taken back was not saved")
    assert not standins.executor.sells
    await standins.ingest.tick(bid="0.53", ask="0.55")
    await eventually(lambda: len(standins.executor.sells) == 1, message="the stop did not sell at the lost mark")
    assert standins.executor.sells[0].trigger_id == "trg_tr"
    await conn.close()


async def test_prices_logged_while_guard_was_down_lift_the_mark_and_the_catch_up_sells(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Guard stopped cleanly (everything saved through the last tick it read). While it was down the bid rose to
    0.70 and fell to 0.62; the restarted guard's catch-up reads the stored book at 0.62: at the stored 0.55 that is
    no crossing, at the 0.70 the log shows since, it is (level 0.63)."""
    conn = await _guarded(db_url, redis)
    await standins.ingest.tick(bid="0.55", ask="0.57", age_s=4)
    await redis.set(MARKS_THROUGH_KEY, await _last_cursor(standins))
    await standins.ingest.tick(bid="0.70", ask="0.72", age_s=3)
    await standins.ingest.tick(bid="0.62", ask="0.64", age_s=2)
    await _store_book(redis, "0.62", "0.64")

    await make_guard(tick_source="log")
    await eventually(lambda: len(standins.executor.sells) == 1, message="the catch-up did not sell")
    await conn.close()


async def test_a_price_from_before_the_stop_was_armed_or_changed_lifts_nothing(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The 0.70 came before the stop's row last changed (a PATCH, here its creation): it is not the stop's high."""
    await standins.ingest.tick(bid="0.55", ask="0.57", age_s=5)
    await redis.set(MARKS_THROUGH_KEY, await _last_cursor(standins))
    await standins.ingest.tick(bid="0.70", ask="0.72", age_s=4)
    conn = await _guarded(db_url, redis, created=datetime.now(UTC) - timedelta(seconds=3))
    await standins.ingest.tick(bid="0.60", ask="0.62", age_s=1)  # 2 s after it: past the arm margin

    running = await make_guard(tick_source="log")
    spec = running.guard.engine.get("trg_tr")
    assert spec is not None and spec.high_water_mark == D("0.60")  # the price after it does count
    await conn.close()


async def test_a_price_logged_before_the_row_was_committed_does_not_lift_the_recovered_mark(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Control read the time it stores as update_time 10 ms before the 0.60 came, and committed the row after it: a
    guard reading every tick never armed the stop before that price, so its mark is the 0.58 after it."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis, min_size="5")
    await standins.ingest.tick(bid="0.50", ask="0.52", age_s=4)
    await redis.set(MARKS_THROUGH_KEY, await _last_cursor(standins))
    high = await standins.ingest.tick(bid="0.60", ask="0.62", age_s=3)
    began = datetime.fromtimestamp((high.received_time_ns - 10_000_000) / 1e9, UTC)
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", fraction="1", created=began)
    await standins.ingest.tick(bid="0.58", ask="0.60", age_s=1)  # after the stop existed

    running = await make_guard(tick_source="log")
    spec = running.guard.engine.get("trg_tr")
    assert spec is not None and spec.high_water_mark == D("0.58")
    await conn.close()


async def test_each_complete_mark_save_records_how_far_the_log_was_read(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await _guarded(db_url, redis)
    running = await make_guard(tick_source="log")
    await standins.ingest.tick(bid="0.60", ask="0.62")
    last = await _last_cursor(standins)

    async def recorded() -> bool:
        through = await redis.get(MARKS_THROUGH_KEY)
        return through == last and (await trigger_row(conn, "trg_tr"))["high_water_mark"] == D("0.60")

    await eventually(recorded, message="the saved cursor did not reach the tick whose rise was saved")
    assert running.ticks.cursor == last
    await conn.close()


async def _store_book(redis: Any, bid: str, ask: str) -> None:
    """The book ingest stored, read now."""
    updated = int(time.time() * 1000)
    await write_book(redis, BookSnapshot(ASSET, CONDITION, ((D(bid), D(100)),), ((D(ask), D(100)),), D("0.01"),
                                         updated, updated))


async def test_after_a_failed_replay_no_cursor_is_recorded_so_the_next_start_reads_that_stretch_again(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A kept cursor Redis refuses to read after (its next entry id overflows): the replay fails, the guard starts on
    its stored marks, and its saves leave the kept cursor as it was."""
    conn = await _guarded(db_url, redis)
    await standins.ingest.tick(bid="0.50", ask="0.52", age_s=3)
    unreadable = f"{time.time_ns() // 1_000_000 - 1000}-18446744073709551615"  # a second ago, the last sequence
    await redis.set(MARKS_THROUGH_KEY, unreadable)
    running = await make_guard(tick_source="log")
    assert running.guard.stats.marks_recovered == 0
    await standins.ingest.tick(bid="0.60", ask="0.62")

    async def saved() -> bool:
        return (await trigger_row(conn, "trg_tr"))["high_water_mark"] == D("0.60")

    await eventually(saved, message="the risen mark was not saved")
    await running.guard.flush_marks()
    assert await redis.get(MARKS_THROUGH_KEY) == unreadable
    await conn.close()


async def test_a_log_trimmed_past_the_saved_cursor_is_reported(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The log's length cap dropped the entry of the kept cursor and the 0.60 after it while guard was down: the
    replay cannot take that rise back, and says so (the 0.58 still in the log lifts the mark)."""
    conn = await _guarded(db_url, redis)
    await standins.ingest.tick(bid="0.50", ask="0.52", age_s=3)
    await redis.set(MARKS_THROUGH_KEY, await _last_cursor(standins))
    await standins.ingest.tick(bid="0.60", ask="0.62", age_s=2)
    await standins.ingest.tick(bid="0.58", ask="0.60", age_s=1)
    await standins.ingest.log.redis.xtrim(PRICE_TICKS, maxlen=1, approximate=False)

    running = await make_guard(tick_source="log")
    assert running.guard.stats.marks_log_trimmed == 1
    spec = running.guard.engine.get("trg_tr")
    assert spec is not None and spec.high_water_mark == D("0.58")
    await conn.close()
