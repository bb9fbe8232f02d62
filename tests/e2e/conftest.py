"""One whole stack for the end-to-end module: the simulator in-process, every service a real subprocess.

``pipeline`` starts :class:`tools.pipeline.Pipeline` once per module: its own migrated PostgreSQL
database (from the session template), its own Redis database number, free ports for Envoy and every
service, the supervisor restarting what a test kills. Tests use fresh leader and follower addresses
so they never see each other's orders.

When a test that uses the stack fails, the last lines of every service's log are added to its report, and with
``TT_E2E_KEEP_LOGS=<folder>`` the whole logs folder is copied there (the stack's run folder is removed after).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import redis_db, template_database
from tools.pipeline import Pipeline, free_port_env, isolated_env

E2E_REDIS_DB = 11
LOGGED = ("ingest", "router", "executor", "guard", "control")
TAIL_LINES = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                            pytest.TestReport]:
    """A failed stack test's report carries the services' last log lines (what CI shows of a failure)."""
    report = yield
    pipeline = getattr(item, "funcargs", {}).get("pipeline")
    if report.when == "call" and report.failed and isinstance(pipeline, Pipeline):
        for name in LOGGED:
            report.sections.append((f"{name} log, last {TAIL_LINES} lines", pipeline.log_tail(name, TAIL_LINES)))
        keep = os.environ.get("TT_E2E_KEEP_LOGS", "").strip()
        if keep:
            target = Path(keep) / item.name
            shutil.copytree(pipeline.paths.logs, target, dirs_exist_ok=True)
            report.sections.append(("logs kept", str(target)))
    return report


@pytest.fixture(scope="module")
def e2e_db(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A migrated database for the module's stack."""
    name = f"tt_e2e_{os.getpid()}"
    with template_database(pg_server_url, pg_template, name) as url:
        yield url


@pytest.fixture(scope="module")
def pipeline(e2e_db: str, redis_server_url: str) -> Iterator[Pipeline]:
    """The simulator and the whole stack (Envoy, control, ingest, router, executor, guard)."""
    rurl = redis_db(redis_server_url, E2E_REDIS_DB)
    client = redis.Redis.from_url(rurl)
    client.flushdb()
    client.close()
    env = isolated_env()
    env.update(free_port_env())
    env.update({"DATABASE_URL": e2e_db, "REDIS_URL": rurl, "TT_STACK_READY_TIMEOUT_S": "90"})
    # outside pytest's numbered base folders, which a concurrent session may prune
    with tempfile.TemporaryDirectory(prefix="tt-e2e-") as tmp:
        p = Pipeline.start(Path(tmp) / "run", env=env, seed=None, out=lambda _line: None)
        try:
            yield p
        finally:
            p.stop(quiet=True)
