"""(f) of ``bench pipeline``: the executor stalls under load, then drains its backlog; its memory is measured.

The load of (c) (100 followed-leader trades/s x 10 followers each, 1,000 orders/s) runs for ``duration_s``;
``stall_at_s`` into it the executor is stopped (SIGSTOP) for ``stall_s`` and then continued, so the orders
routed meanwhile (``stall_s`` x 1,000) reach it at once. Measured: the executor's VmRSS sampled every
0.25 s (before the stall, peak; target ≤ 250 MB like every service), how long after the continue the last
order routed before it reached the Insiders fake (the backlog drained), and that every order was POSTed
exactly once there. A stall near the executor's ``max_order_age_s`` (60 s) leaves orders too old to send when
their turn comes: those are refused (REJECTED ``STALE_ORDER``), counted, and not expected at the fake.

A stop longer than the executor lease's unconfirmed deadline (``common.lease.MAX_UNCONFIRMED_S``, 8 s, counted on
CLOCK_BOOTTIME, which runs on while the process is stopped) makes the executor exit once continued: another
executor may have taken its lease meanwhile. The supervisor starts it again, so the default 10-s stall drains its
backlog through a restart and its recovery; the POSTs it had in flight at its exit go UNKNOWN and are settled by
status queries (``orders_unknown_or_failed_after_stall``). Memory is sampled from whichever process runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench import address, memory_mb
from bench._pipeline_harness import RSS_TARGET_MB, Bench


def scenario_f(b: Bench, *, rate: float = 100.0, leaders: int = 10, followers: int = 10, duration_s: float = 40.0,
               stall_at_s: float = 10.0, stall_s: float = 10.0) -> dict[str, Any]:
    """Drive (c)'s load, stall the executor ``stall_s`` in the middle, and report its memory and catch-up."""
    names = [address() for _ in range(leaders)]
    plan = [(leader, b.market()) for leader in names]
    wallets = {w for ws in b.subscribe(names, followers).values() for w in ws}
    b.wait_followed(names)
    warm = b.drive(rate, 2.0, plan)
    b.wait_posts(wallets, warm * followers, 30)
    since = b.post_count()
    pid = int(b.p.program("executor")["pid"])  # the process stopped; a restart after the stall runs another
    rss: list[tuple[float, float]] = []
    marks: dict[str, float] = {}
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        running = pid
        while not done.is_set():
            with contextlib.suppress(KeyError, ValueError, OSError):
                running = int(b.p.program("executor")["pid"])
            mb = memory_mb(running).get("VmRSS")
            if mb is not None:
                rss.append((time.monotonic() - t0, mb))
            time.sleep(0.25)

    def stall() -> None:
        if done.wait(stall_at_s):
            return
        os.kill(pid, signal.SIGSTOP)
        marks["stopped"] = time.monotonic() - t0
        marks["stopped_ns"] = time.time_ns()
        try:
            done.wait(stall_s)
        finally:
            os.kill(pid, signal.SIGCONT)
            marks["continued_ns"] = time.time_ns()

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=stall, daemon=True)]
    for t in threads:
        t.start()
    try:
        sent = b.drive(rate, duration_s, plan)
        expected = sent * followers
        records, stale = _wait_posts_or_stale(b, wallets, expected, since, 240.0)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=stall_s + 5)
    ids = [r.client_order_id for r in records]
    stuck = _evidence(b) if len(records) + stale < expected else None
    before = [mb for at, mb in rss if at < marks.get("stopped", stall_at_s)]
    b.read_orders()
    continued = int(marks.get("continued_ns", 0))
    backlog = [r.arrival_ns for r in records
               if (o := b.orders.get(r.client_order_id)) is not None and 0 < o.routed_time_ns < continued]
    return {"rate_per_s": rate, "orders_per_s": rate * followers, "stall_s": stall_s,
            "orders_backlogged": int(stall_s * rate * followers), "orders_routed": expected,
            "refused_stale": stale, "orders_expected": expected - stale,
            "posts": len(ids), "posted_twice": len(ids) - len(set(ids)),
            "executor_rss_mb": {"before_stall": round(max(before, default=0.0), 1),
                                "peak": round(max((mb for _, mb in rss), default=0.0), 1),
                                "end": round(rss[-1][1], 1) if rss else 0.0, "target": RSS_TARGET_MB},
            "backlog_drained_s": round((max(backlog) - continued) / 1e9, 2) if backlog and continued else None,
            "restarts": b.p.program("executor").get("restarts"),
            "orders_unknown_or_failed_after_stall": _troubled(b, int(marks.get("stopped_ns", 0))),
            **({"stuck": stuck} if stuck else {})}


def _wait_posts_or_stale(b: Bench, wallets: set[str], expected: int, since: int,
                         timeout_s: float) -> tuple[list[Any], int]:
    """The POSTs of ``wallets`` from the fake's ``since``-th on, once they and the orders refused as too old
    (``STALE_ORDER``, never sent) account for ``expected`` orders (or at ``timeout_s``), and how many were refused."""
    deadline = time.monotonic() + timeout_s
    while True:
        stale = _stale_refusals(b, wallets)
        records = b.wait_posts(wallets, expected - stale, min(5.0, max(0.0, deadline - time.monotonic())), since)
        if len(records) + stale >= expected or time.monotonic() >= deadline:
            return records, _stale_refusals(b, wallets)


def _stale_refusals(b: Bench, wallets: set[str]) -> int:
    with psycopg.connect((b.p.run_dir / "database_url").read_text().strip()) as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE state = 'REJECTED' AND reason = 'STALE_ORDER'"
                           " AND follower_wallet_id = ANY(%s)", (sorted(wallets),)).fetchone()
    return int(row[0]) if row else 0


def _troubled(b: Bench, since_ns: int) -> dict[str, int]:
    """Orders whose POST outcome went UNKNOWN (a timeout: settled by query), or that FAILED, since the stall
    began: a venue that answered every POST leaves none."""
    if not since_ns:
        return {}
    with psycopg.connect((b.p.run_dir / "database_url").read_text().strip()) as conn:
        rows = conn.execute(
            "SELECT type, count(DISTINCT client_order_id) FROM order_events WHERE created_at >= %s"
            " AND type IN ('ORDER_EVENT_TYPE_UNKNOWN', 'ORDER_EVENT_TYPE_FAILED') GROUP BY type",
            (datetime.fromtimestamp(since_ns / 1e9, UTC),)).fetchall()
    return {str(t).removeprefix("ORDER_EVENT_TYPE_"): int(n) for t, n in rows}


def _evidence(b: Bench) -> dict[str, Any]:
    """Where a run that lost orders stopped: each log's newest entry beside its reader's saved cursor; every
    service logs its asyncio tasks (SIGUSR1) for the logs kept with ``--keep-logs``."""
    out: dict[str, Any] = {}
    for log_name, cursor in (("leader_trades", "router"), ("routed_trades", "executor")):
        info: Any = b.redis.xinfo_stream(f"tt:stream:{log_name}")
        saved = b.redis.get(f"tt:cursor:{cursor}")
        out[log_name] = {"newest": _text(info["last-generated-id"]), f"{cursor} cursor": _text(saved)}
    for name in ("ingest", "router", "executor", "guard"):
        with contextlib.suppress(Exception):
            os.kill(int(b.p.program(name)["pid"]), signal.SIGUSR1)
    time.sleep(1.0)
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
