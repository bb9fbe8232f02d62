"""Chaos: copies stream in while every layer, Redis and PostgreSQL crash; every copy is posted exactly once.

The short form of :mod:`tools.chaos` (3 leaders x 3 LIVE followers, 300 leader trades on RTDS and the
data-api at 10/s, kill -9 of every service, twice for the router and the executor, kill -9 of Redis
restarted from its append-only file, a PostgreSQL crash restart, and a machine crash that also costs Redis
its last second of writes); ``python -m bench chaos`` runs the long form. The stack runs on its own
embedded PostgreSQL and Redis (the session's servers must not be crashed under the other tests).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.chaos import SHORT, describe, run_chaos
from tools.pipeline import Pipeline, free_port_env, isolated_env

pytestmark = pytest.mark.integration

SETTLE_S = 90.0


@pytest.fixture(scope="module")
def own_storage_pipeline() -> Iterator[Pipeline]:
    """The simulator and the whole stack on embedded PostgreSQL and Redis of its own run folder."""
    env = isolated_env()
    env.update(free_port_env())
    env["TT_STACK_READY_TIMEOUT_S"] = "90"
    with tempfile.TemporaryDirectory(prefix="tt-chaos-") as tmp:
        p = Pipeline.start(Path(tmp) / "run", env=env, seed=None, out=lambda _line: None)
        try:
            yield p
        finally:
            p.stop(quiet=True)


@pytest.mark.timeout(400)
def test_every_copy_is_posted_once_whatever_crashes(own_storage_pipeline: Pipeline) -> None:
    result = run_chaos(own_storage_pipeline, SHORT, out=lambda _line: None)
    print(describe(result))
    assert result.trades == SHORT.trades and result.followers == SHORT.leaders * SHORT.followers_per_leader
    assert not result.skips, describe(result)  # deep books, no caps: a skip would be a copy not made
    assert result.expected == SHORT.trades * SHORT.followers_per_leader
    assert not result.missing and not result.unexpected and not result.doubled, describe(result)
    assert result.posted == result.expected
    assert result.settle_s <= SETTLE_S, describe(result)
    # the supervisor brought every killed service back (a storage outage may cost a service another start)
    assert all(result.restarts[name] >= n for name, n in result.kills.items()), (result.kills, result.restarts)
