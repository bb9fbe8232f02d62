"""A service whose start-up fails (Redis still down after a crash) ends by itself, so its supervisor restarts it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.config import project_root
from common.embedded import free_port
from common.grpcserver import EXIT_GRACE_S
from tools.pipeline import free_port_env, isolated_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service", ["ingest", "executor"])
def test_a_start_that_fails_after_the_pool_opened_ends_the_process_by_itself(service: str, db_url: str) -> None:
    """PostgreSQL is up, Redis is not: the start fails after the PostgreSQL pool opened. psycopg_pool's tasks
    survive a cancellation, so a pool left open kept asyncio's clean-up waiting until the hard exit (exit code 3,
    after ``EXIT_GRACE_S``); closed on the failure, the process ends at once with the failure's exit code 1."""
    env = {**isolated_env(), **free_port_env(), "DATABASE_URL": db_url,
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "TT_INTERNAL_TOKEN": "ab" * 32}
    done = subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=project_root(), env=env,
                          capture_output=True, text=True, timeout=EXIT_GRACE_S * 6)
    assert done.returncode == 1, done.stderr[-3000:]
