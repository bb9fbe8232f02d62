"""SIGTERM to a real ``python -m services.guard`` whose PostgreSQL hangs while trailing-stop marks are unsaved: the
stop tries to save them, for the grace period at most, and the process ends cleanly in bounded time."""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.executor.test_lease_cut_off import BlackholeProxy
from tests.guard.standins import StandIns, add_market, db, insert_trigger, set_position, trigger_row
from tests.guard.test_crash import _spawn
from tests.helpers import eventually

pytestmark = pytest.mark.integration

PROBE = "7" * 70
K8S_GRACE_S = 30.0  # Kubernetes kills (exit 137) a pod still running this long after its SIGTERM


def _via(url: str, port: int) -> str:
    """``url`` with its server at 127.0.0.1:``port`` (the user part and other options kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    query = "&".join(q for q in parts.query.split("&") if q and not q.startswith(("host=", "port=")))
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{port}", query=query))


async def test_sigterm_with_unsaved_trailing_marks_and_postgres_hung_ends_cleanly_in_bounded_time(
        db_url: str, redis_url: str, redis: Any, standins: StandIns, tmp_path: Path) -> None:
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", mark="0.5", fraction="1")
    # a stop-loss on another asset: its SELL, after the trailing stop's ticks on the same stream, shows they are
    # handled (nothing outside the process shows a mark's rise before it is saved)
    await set_position(conn, "100", asset_id=PROBE)
    await add_market(redis, PROBE)
    await insert_trigger(conn, "trg_probe", "STOP_LOSS", price="0.30", fraction="1", asset_id=PROBE)
    info = conninfo_to_dict(db_url)
    proxy = BlackholeProxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    await proxy.start()
    log_path = tmp_path / "guard.log"
    # grace 1 s; the marks are flushed every 600 s: only the stop saves them
    proc = await _spawn(_via(db_url, proxy.listen_port), redis_url, standins, log_path,
                        TT_TUNE_GUARD_MARK_FLUSH_S="600")
    try:
        await eventually(lambda: standins.ingest.opened >= 1, timeout_s=60, message="guard connected")
        for bid in ("0.55", "0.6", "0.7"):  # the mark rises
            await standins.ingest.tick(bid=bid, ask="0.75")
        await standins.ingest.tick(PROBE, bid="0.25", ask="0.3")  # handled in order, after them
        await eventually(lambda: [s.trigger_id for s in standins.executor.sells] == ["trg_probe"], timeout_s=30,
                         message="the probe's SELL")

        async def probe_settled() -> bool:
            return (await trigger_row(conn, "trg_probe"))["state"] == "DONE"

        await eventually(probe_settled, timeout_s=30)  # nothing of the probe's is left to write
        assert (await trigger_row(conn, "trg_tr"))["high_water_mark"] == Decimal("0.5")  # the risen mark unsaved
        proxy.cut = True  # PostgreSQL stops answering: packets dropped, connections left open
        await asyncio.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = await asyncio.wait_for(proc.wait(), K8S_GRACE_S + 10)
        except TimeoutError:
            code = None
        took = time.monotonic() - started
        assert code == 0 and took < K8S_GRACE_S, f"exit {code} after {took:.1f}s\n" + log_path.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proxy.close()
        await conn.close()
