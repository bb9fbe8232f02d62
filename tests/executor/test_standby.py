"""Two executor processes on one database (a rolling update, a replica started by mistake): one works, the
other waits; when the active one dies or loses its lease the standby takes over, and no order is POSTed or
its fill booked twice, nor POSTed by the old one once the new one ended it (a frozen host that wakes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
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

_LEASE_HOLDER = """
SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.application_name = 'tt-executor-lease' AND a.datname = current_database() AND l.locktype = 'advisory'
  AND l.granted
"""


def _spawn(h: Harness, log_path: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **h.env(), "DATABASE_URL": h.db_url, "REDIS_URL": h.redis_url,
           **overrides("executor", max_inflight=16, grace_s=0, post_timeout_s=5), **extra}
    return subprocess.Popen([sys.executable, "-m", "services.executor"], cwd=project_root(), env=env,
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)


def _query(db_url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def _lease_connections(db_url: str) -> int:
    return len(_query(db_url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'tt-executor-lease' "
                              "AND datname = current_database()"))


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # one a test froze
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _route_and_start(h: Harness, log_path: Path, trades: int = 30,
                           **active_env: str) -> tuple[list[epb.Order], subprocess.Popen[bytes]]:
    await h.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    h.fake.faults.post_delay_s = 0.02
    orders = [make_order(t * 20 + i) for t in range(trades) for i in range(20)]
    for t in range(trades):
        await h.route(*orders[t * 20:(t + 1) * 20])
    active = _spawn(h, log_path, **active_env)
    await eventually(lambda: len(h.fake.posts) >= 100, timeout_s=30, interval_s=0.002)
    return orders, active


async def _all_done_once(h: Harness, orders: list[epb.Order], *, replays_at_most: int = 0) -> None:
    """Every order FILLED, placed at the venue once and its fill booked once. ``replays_at_most``: POSTs that
    repeated an order's Idempotency-Key (the venue answers them with the original order)."""
    coids = {o.client_order_id for o in orders}

    def all_filled() -> bool:
        states = dict(_query(h.db_url, "SELECT client_order_id, state FROM orders"))
        assert set(states) == coids, f"{len(coids - set(states))} orders missing"
        assert set(states.values()) == {"FILLED"}, Counter(states.values())
        return True

    await eventually(all_filled, timeout_s=60, interval_s=0.2)
    created = Counter(p.client_order_id or p.idempotency_key for p in h.fake.posts if p.outcome == "created")
    assert created == dict.fromkeys(coids, 1)
    replays = sum(h.fake.post_counts().values()) - len(coids)
    assert replays <= replays_at_most, f"{replays} POSTs repeated an order"
    assert dict(_query(h.db_url, "SELECT order_id, count(*) FROM fills GROUP BY order_id")) == dict.fromkeys(coids, 1)
    held = _query(h.db_url, f"SELECT size FROM positions WHERE asset_id = '{ASSET}' AND size > 0")
    booked = _query(h.db_url, f"SELECT sum(size - fee_shares) FROM fills WHERE asset_id = '{ASSET}'")
    assert sum(r[0] for r in held) == booked[0][0]  # type: ignore[misc]


async def test_a_standby_waits_and_takes_over_when_the_active_executor_dies(harness: Harness, tmp_path: Path) -> None:
    log_path = tmp_path / "executor.log"
    orders, active = await _route_and_start(harness, log_path, trades=100)
    harness.fake.faults.post_delay_s = 0.05  # ~6 s of POSTs left: the standby's start must come before the last
    standby = _spawn(harness, log_path, TT_TUNE_EXECUTOR_LEASE_POLL_S="0.05")
    try:
        await eventually(lambda: _lease_connections(harness.db_url) == 2, timeout_s=30)
        posted = len(harness.fake.posts)
        await asyncio.sleep(0)
        active.send_signal(signal.SIGKILL)
        await asyncio.to_thread(active.wait, 10)
        assert posted < len(orders), "the kill came too late to test anything"
        await _all_done_once(harness, orders)
        assert _query(harness.db_url, "SELECT epoch FROM service_leases WHERE name = 'executor'") == [(2,)]
        assert standby.poll() is None
    finally:
        await asyncio.to_thread(_stop, active, standby)


async def test_an_executor_that_lost_its_lease_stops_and_the_standby_finishes(harness: Harness,
                                                                            tmp_path: Path) -> None:
    log_path = tmp_path / "executor.log"
    # the active one checks its lease rarely (2 s): it must learn of the takeover from its first write the
    # fence refuses, not keep posting the orders it holds intents for until its next check
    orders, active = await _route_and_start(harness, log_path, trades=100, TT_TUNE_EXECUTOR_LEASE_CHECK_S="2")
    standby = _spawn(harness, log_path, TT_TUNE_EXECUTOR_LEASE_POLL_S="0.05")
    try:
        await eventually(lambda: _lease_connections(harness.db_url) == 2, timeout_s=30)
        [(pid,)] = await asyncio.to_thread(_query, harness.db_url, _LEASE_HOLDER)
        posted = len(harness.fake.posts)
        await asyncio.to_thread(_query, harness.db_url, f"SELECT pg_terminate_backend({pid})")
        assert posted < len(orders), "the lease was taken too late to test anything"
        assert await asyncio.to_thread(active.wait, 20) == 70  # ends itself: another executor took over
        # Until it noticed, the old one could still POST the orders it had in flight (their intents were
        # committed before the takeover, so the new one resumed them too): same Idempotency-Key, one order.
        # (Without the fence's refusal ending it, it went on to repeat about 1,250 of the 2,000.)
        await _all_done_once(harness, orders, replays_at_most=16)
        assert _query(harness.db_url, "SELECT epoch FROM service_leases WHERE name = 'executor'") == [(2,)]
    finally:
        await asyncio.to_thread(_stop, active, standby)


async def test_a_frozen_superseded_executor_posts_nothing_when_it_wakes(harness: Harness, tmp_path: Path) -> None:
    """A BUY answered 503 waits its retry backoff; its executor's host freezes then (a paused VM), PostgreSQL drops
    its sessions, and a standby takes over and ends the order LOST (its reservation released). Woken, the old
    executor must not POST it: it would fill at the venue with nobody to book it."""
    h = harness
    log_path = tmp_path / "executor.log"
    await h.set_book(ASSET, [("0.49", "100000")], [("0.50", "1000000")])
    order = make_order(1)
    coid = order.client_order_id
    h.fake.faults.fail_posts = 1
    tuned = {"TT_TUNE_EXECUTOR_RETRY_BASE_S": "4", "TT_TUNE_EXECUTOR_RETRY_CAP_S": "4",
             "TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S": "1", "TT_TUNE_EXECUTOR_LEASE_POLL_S": "0.05"}
    old = _spawn(h, log_path, **tuned)
    new: subprocess.Popen[bytes] | None = None
    state = f"SELECT state, reason FROM orders WHERE client_order_id = '{coid}'"
    try:
        await h.route(order)
        await eventually(lambda: len(h.fake.posts_for(coid)) == 1, timeout_s=30, interval_s=0.005)
        # the 503 is on record before the freeze: the retry needs no further write
        await eventually(lambda: _query(h.db_url, f"SELECT attempts FROM orders WHERE client_order_id = '{coid}'")
                         == [(2,)], timeout_s=5, interval_s=0.005)
        frozen_at = time.monotonic()
        old.send_signal(signal.SIGSTOP)
        # what PostgreSQL's keepalives do to a frozen host's sessions after ~11 s, at once here
        _query(h.db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE "
                         "'tt-executor%' AND datname = current_database() AND pid <> pg_backend_pid()")
        await asyncio.sleep(1.5)  # the freeze outlasts the order's resubmit window
        new = _spawn(h, log_path, **tuned)
        await eventually(lambda: _query(h.db_url, state) == [("LOST", "VENUE_NOT_FOUND")], timeout_s=30,
                         interval_s=0.05)
        assert h.fake.order(coid) is None
        ended_at = time.time_ns()
        await asyncio.sleep(max(0.0, frozen_at + 12 - time.monotonic()))  # a freeze that long is a real one
        old.send_signal(signal.SIGCONT)
        assert await asyncio.to_thread(old.wait, 20) == 70  # it finds out it lost the lease...
        assert [p.outcome for p in h.fake.posts_for(coid) if p.arrival_ns > ended_at] == []  # ...before any POST
        assert h.fake.order(coid) is None and _query(h.db_url, "SELECT count(*) FROM fills") == [(0,)]
    finally:
        await asyncio.to_thread(_stop, old, *([new] if new else []))
