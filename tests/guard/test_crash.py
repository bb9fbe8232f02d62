"""kill -9 of a real ``python -m services.guard`` at the worst moments: exactly one SELL reaches the executor."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from common.config import project_root
from common.ids import hash_id
from tests.guard.standins import StandIns, add_market, db, insert_trigger, set_position, trigger_row
from tests.helpers import INTERNAL_ENV, eventually

pytestmark = pytest.mark.integration


async def _spawn(db_url: str, redis_url: str, s: StandIns, log_path: Path, **extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, **INTERNAL_ENV, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "TT_GUARD_GRPC_PORT": "0", "TT_INGEST_GRPC_TARGET": s.target(0), "TT_EXECUTOR_GRPC_TARGET": s.target(1),
           "TT_CONTROL_GRPC_TARGET": s.target(2), "TT_TUNE_GUARD_PERF_INTERVAL_S": "60", "TT_TUNE_GUARD_GRACE_S": "1",
           "TT_RUN_DIR": str(log_path.parent), "TT_TUNE_GUARD_TICK_SOURCE": "grpc", **extra}
    log_file = log_path.open("ab")
    try:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "services.guard", cwd=project_root(),
                                                    env=env, stdout=log_file, stderr=log_file)
    finally:
        log_file.close()


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.parametrize("crash_after", ["decision", "submit"])
async def test_killed_between_decision_and_record_sells_exactly_once(
        crash_after: str, db_url: str, redis_url: str, redis: Any, standins: StandIns, tmp_path: Path) -> None:
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    log_path = tmp_path / "guard.log"
    proc = await _spawn(db_url, redis_url, standins, log_path, TT_GUARD_CRASH_AFTER=crash_after)
    try:
        await eventually(lambda: standins.ingest.opened >= 1, timeout_s=60, message="guard connected")
        await standins.ingest.tick(bid="0.25", ask="0.3")
        assert await asyncio.wait_for(proc.wait(), 30) == 137, log_path.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
    row = await trigger_row(conn, "trg_sl")
    expected_id = hash_id("co", "trg_sl", "1")
    # Killed after the executor's answer, the executor's FILLED event may have been applied first (the stand-in
    # streams its events before it answers): DONE, and settling it recorded submitted_at. Otherwise the
    # submission was never marked: the marker runs after the answer, and the process died at the answer.
    states = ("FIRED",) if crash_after == "decision" else ("FIRED", "DONE")
    assert row["state"] in states and row["order_id"] == expected_id, dict(row)
    assert (row["submitted_at"] is None) if row["state"] == "FIRED" else (row["submitted_at"] is not None), dict(row)
    # The SELL starts as soon as it is decided, before the commit: at "decision" it may already be out.
    assert len(standins.executor.calls) in ((0, 1) if crash_after == "decision" else (1,))

    proc = await _spawn(db_url, redis_url, standins, log_path)
    try:
        async def done() -> bool:
            return (await trigger_row(conn, "trg_sl"))["state"] == "DONE"

        await eventually(done, timeout_s=60, message="trigger settled after restart")
        await eventually(lambda: standins.ingest.opened >= 2, timeout_s=30)
        await standins.ingest.tick(bid="0.2", ask="0.3")  # still below the stop: nothing new may fire
        await standins.ingest.tick(bid="0.1", ask="0.3")
        assert await _stop(proc) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
    assert [o.client_order_id for o in standins.executor.sells] == [expected_id]  # one SELL at the venue
    assert standins.executor.sells[0].size == "100"
    assert sum(not c.duplicate for c in standins.executor.calls) == 1
    # marked submitted at the restart; a trigger already DONE (its fill applied before the kill) needs no mark
    assert (await trigger_row(conn, "trg_sl"))["submitted_at"] is not None or row["state"] == "DONE"
    await conn.close()
