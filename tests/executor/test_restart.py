"""kill -9 the executor process mid-stream, restart it: no order POSTed twice, none lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from common.config import project_root
from common.tuning import overrides
from tests.executor.conftest import ASSET, Harness, make_order
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _spawn(h: Harness, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **h.env(), "DATABASE_URL": h.db_url, "REDIS_URL": h.redis_url,
           **overrides("executor", max_inflight=16, grace_s=0, post_timeout_s=5)}
    return subprocess.Popen([sys.executable, "-m", "services.executor"], cwd=project_root(), env=env,
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)


def _states(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT client_order_id, state FROM orders").fetchall())  # type: ignore[arg-type]


def _fill_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT order_id, count(*) FROM fills GROUP BY order_id").fetchall())  # type: ignore[arg-type]


async def test_kill_9_mid_stream_loses_and_doubles_nothing(harness: Harness, tmp_path: Path) -> None:
    await harness.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    harness.fake.faults.post_delay_s = 0.02
    orders = [make_order(t * 20 + i) for t in range(30) for i in range(20)]
    for t in range(30):
        await harness.route(*orders[t * 20:(t + 1) * 20])
    log_path = tmp_path / "executor.log"
    proc = _spawn(harness, log_path)
    try:
        await eventually(lambda: len(harness.fake.posts) >= 150, timeout_s=30, interval_s=0.002)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        killed_at = len(harness.fake.posts)
        assert killed_at < len(orders), "the kill came too late to test anything"
        proc = _spawn(harness, log_path)
        coids = {o.client_order_id for o in orders}

        def all_filled() -> bool:
            states = _states(harness.db_url)
            assert set(states) == coids, f"{len(coids - set(states))} orders missing"
            assert set(states.values()) == {"FILLED"}, Counter(states.values())
            return True
        await eventually(all_filled, timeout_s=60, interval_s=0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
    counts = harness.fake.post_counts()
    doubles = {k: n for k, n in counts.items() if n != 1}
    assert not doubles, f"POSTed more than once: {doubles}"
    assert set(counts) == coids
    assert _fill_counts(harness.db_url) == dict.fromkeys(coids, 1)
    filled = {e.client_order_id for e in await harness.all_events() if e.type == epb.ORDER_EVENT_TYPE_FILLED}
    assert filled == coids
