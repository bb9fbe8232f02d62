"""``make demo`` as a test: it must pass its own checks on free ports and leave nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.config import project_root
from tests.helpers import redis_db, template_database
from tools.pipeline import free_port_env, isolated_env
from tools.supervisor import read_state

pytestmark = pytest.mark.integration
DEMO_REDIS_DB = 12
SIM_PORT_VARS = ("TT_SIM_RTDS_PORT", "TT_SIM_CLOB_PORT", "TT_SIM_DATA_API_PORT", "TT_SIM_INSIDERS_PORT")


@pytest.fixture
def demo_db(pg_server_url: str, pg_template: str) -> Iterator[str]:
    name = f"tt_demo_{os.getpid()}"
    with template_database(pg_server_url, pg_template, name) as url:
        yield url


@pytest.mark.timeout(180)
def test_make_demo_passes_its_checks_and_stops_everything(demo_db: str, redis_server_url: str) -> None:
    from common.embedded import free_port

    rurl = redis_db(redis_server_url, DEMO_REDIS_DB)
    client = redis.Redis.from_url(rurl)
    client.flushdb()
    client.close()
    with tempfile.TemporaryDirectory(prefix="tt-demo-") as tmp:
        env = isolated_env()
        env.update(free_port_env())
        env.update({name: str(free_port()) for name in SIM_PORT_VARS})
        env.update({"DATABASE_URL": demo_db, "REDIS_URL": rurl, "TT_RUN_DIR": str(Path(tmp) / "run")})
        proc = subprocess.run([sys.executable, "-m", "tools.demo"], cwd=project_root(), env=env,
                              capture_output=True, text=True, timeout=170, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        assert "Demo passed" in out and "✗" not in out
        for shown in ("FILLED", "skipped MARKET_DENIED", "INSUFFICIENT_DEPTH", "after 1 × 503", "OPEN after",
                      "TriggerEvent FIRED", "LOSS_STOP", "copy latency", "/metrics",
                      "*CRITICAL* circuit breaker insiders OPEN after", "signature ✓"):
            assert shown in out, f"{shown!r} not in the demo's output"
        assert not read_state(Path(tmp) / "run")  # the supervisor's state is gone: make down ran
