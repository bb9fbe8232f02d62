"""kill -9 the router process mid-stream, restart it, and every order is in the routed log exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from common.tuning import overrides
from tests.helpers import INTERNAL_ENV, eventually
from tests.router.conftest import Stack, leader_trade, subscription

ROOT = Path(__file__).resolve().parents[2]
TRADES = 150
FOLLOWERS = 3


def _spawn(stack: Stack, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ, **INTERNAL_ENV, "PYTHONPATH": str(ROOT), "DATABASE_URL": stack.db_url,
        "REDIS_URL": stack.redis_url,
        "TT_INGEST_GRPC_TARGET": f"127.0.0.1:{stack.ingest.port}", "TT_ROUTER_GRPC_PORT": "0",
        "TT_CLOB_API_URL": stack.http.url,
        **overrides("router", start="oldest", outbox_interval_s=0.2, outbox_min_age_s=0.5, index_check_interval_s=0.5),
        "TT_LOG_LEVEL": "WARNING",
    }
    env.pop("TT_INSIDERS_API_URL", None)
    with log_path.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.router"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.integration
async def test_kill9_mid_stream_loses_and_doubles_nothing(stack: Stack, tmp_path: Path) -> None:
    await stack.add(*(subscription(f"sub_{i}", f"w_{i}") for i in range(FOLLOWERS)))
    log_path = tmp_path / "router.log"
    ids = [f"lt_{i:04d}" for i in range(TRADES)]

    async def routed_ids() -> list[str]:
        return [r.trade.id for r in await stack.routed()]

    async def at_least(n: int) -> bool:
        return len(set(await routed_ids())) >= n

    await stack.publish(*(leader_trade(t) for t in ids[:60]))
    proc = _spawn(stack, log_path)
    try:
        await eventually(lambda: at_least(10), timeout_s=30, interval_s=0.002)
        _kill9(proc)  # mid-stream: 60 trades were queued
        await stack.publish(*(leader_trade(t) for t in ids[60:120]))
        proc = _spawn(stack, log_path)
        await eventually(lambda: at_least(70), timeout_s=30, interval_s=0.002)
        _kill9(proc)
        await stack.publish(*(leader_trade(t) for t in ids[120:]))
        # the same trades delivered again (e.g. by the data-api feed) must change nothing
        await stack.publish(*(leader_trade(t) for t in ids[:5]))
        proc = _spawn(stack, log_path)
        await eventually(lambda: at_least(TRADES), timeout_s=60, interval_s=0.05)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)
    routed = await stack.routed()
    trade_counts = Counter(r.trade.id for r in routed)
    assert sorted(trade_counts) == ids
    assert max(trade_counts.values()) == 1, [t for t, n in trade_counts.items() if n > 1]
    orders = Counter(o.client_order_id for r in routed for o in r.orders)
    assert len(orders) == TRADES * FOLLOWERS and max(orders.values()) == 1
    assert all(o.amount_usd == "25" for r in routed for o in r.orders)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
