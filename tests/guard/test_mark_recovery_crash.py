"""kill -9 of a real ``python -m services.guard`` after a trailing stop's mark rose and before it was saved: the
restarted process takes the mark back from the tick log and sells at it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.guard.standins import StandIns, add_market, db, insert_trigger, set_position, trigger_row
from tests.guard.test_crash import _spawn, _stop
from tests.helpers import eventually

pytestmark = pytest.mark.integration

PROBE = "8" * 70


async def test_a_mark_risen_before_a_kill_is_not_lost(db_url: str, redis_url: str, redis: Any, standins: StandIns,
                                                      tmp_path: Path) -> None:
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", mark="0.55", fraction="1",
                         created=datetime.now(UTC) - timedelta(hours=1))  # level 0.495
    # a stop-loss on another asset: its SELL, after the trailing stop's tick on the same stream, shows it was handled
    await set_position(conn, "100", asset_id=PROBE)
    await add_market(redis, PROBE)
    await insert_trigger(conn, "trg_probe", "STOP_LOSS", price="0.30", fraction="1", asset_id=PROBE)
    log_path = tmp_path / "guard.log"
    env = {"TT_TUNE_GUARD_MARK_FLUSH_S": "600"}  # the marks are saved only by a stop, which a kill skips
    first = await _spawn(db_url, redis_url, standins, log_path, **env)
    try:
        await eventually(lambda: standins.ingest.opened >= 1, timeout_s=60, message="guard connected")
        await standins.ingest.tick(bid="0.60", ask="0.62")  # the mark rises to 0.60: level 0.54
        await standins.ingest.tick(PROBE, bid="0.25", ask="0.3")
        await eventually(lambda: [s.trigger_id for s in standins.executor.sells] == ["trg_probe"], timeout_s=30,
                         message="the probe's SELL")
    finally:
        first.kill()
        await first.wait()
    assert (await trigger_row(conn, "trg_tr"))["high_water_mark"] == Decimal("0.55")  # the rise was never saved

    second = await _spawn(db_url, redis_url, standins, log_path, **env)
    try:
        await eventually(lambda: standins.ingest.opened >= 2, timeout_s=60, message="guard connected again")
        await standins.ingest.tick(bid="0.53", ask="0.55")  # below 0.54, above the stored mark's 0.495
        await eventually(lambda: "trg_tr" in {s.trigger_id for s in standins.executor.sells}, timeout_s=30,
                         message="the stop did not sell at the mark risen before the kill")
    finally:
        assert await _stop(second) == 0
    await conn.close()
