"""A graceful stop while Redis is down or hung: every step of the stop runs (the lease is released last), none
raises, and it ends in bounded time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from common.tuning import overrides
from services.executor.app import start
from services.executor.config import Settings
from tests.executor.conftest import ASSET, Harness, make_order
from tests.executor.test_lease_cut_off import BlackholeProxy
from tests.helpers import eventually

pytestmark = pytest.mark.integration

_TUNED: dict[str, Any] = overrides("executor", max_inflight=16, post_timeout_s=5)


def _via(url: str, port: int) -> str:
    """``url`` with its server at 127.0.0.1:``port``."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{port}"))


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[BlackholeProxy]:
    parts = urlsplit(redis_url)
    proxy = BlackholeProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.mark.parametrize("outage", ["down", "hung"])
async def test_a_stop_with_redis_gone_runs_every_step_and_releases_the_lease(
        outage: str, harness: Harness, redis_proxy: BlackholeProxy) -> None:
    h = harness
    await h.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    h.fake.faults.post_delay_s = 0.05
    settings = Settings.from_env(h.env(**_TUNED))
    running = await start(settings, h.db_url, _via(h.redis_url, redis_proxy.listen_port))
    orders = [make_order(t * 20 + i) for t in range(10) for i in range(20)]
    for t in range(10):
        await h.route(*orders[t * 20:(t + 1) * 20])
    await eventually(lambda: len(h.fake.posts) >= 40, timeout_s=30, interval_s=0.002)
    if outage == "down":
        await redis_proxy.close()  # connections closed, new ones refused
    else:
        redis_proxy.cut = True  # packets dropped, connections left open
    started = time.monotonic()
    await running.stop(1.0)  # raises nothing
    took = time.monotonic() - started
    assert took < 25, f"stop took {took:.1f}s"
    # the lease was released: a successor starts at once and copies every order
    h.fake.faults.post_delay_s = 0.0
    successor = await asyncio.wait_for(h.start_executor(**_TUNED), 10)  # no standby wait for the lease
    assert successor.lease.epoch != running.lease.epoch
    await eventually(lambda: h.all_terminal(orders), timeout_s=60, interval_s=0.2)
