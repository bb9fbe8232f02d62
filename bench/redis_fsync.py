"""What ``appendfsync always`` would cost against ``everysec`` (the embedded Redis' policy).

``python -m bench redis_fsync [--quick] [--rate 200] [--windows 16] [--no-save]``:

1. XADD round trips on an embedded redis-server of its own: one XADD at a time (1 ms apart), and 200
   pipelined XADDs (a fan-out's worth), alternating the policy (``CONFIG SET appendfsync``) between rounds;
2. the copy path: the stack on embedded storage, one LIVE follower, leader trades at ``--rate`` on RTDS,
   the policy switched between windows of 3 s on the same running stack (so the machine's load falls on both
   alike): ingest received → POST received per copy.

Under ``always`` Redis writes and fsyncs its append-only file before it answers, so a crash of its machine
loses no acknowledged write; the fsync runs on Redis' only thread, so every command behind it waits too.
The project keeps ``everysec`` and rebuilds what a lost second matters to from PostgreSQL (the router's
relog), see ``tools/chaos.py``'s ``redis-lossy`` and ``machine`` faults.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench import address, print_table, save_results, summarize
from bench._pipeline_harness import Bench
from bench.pipeline import start_pipeline
from common.embedded import start_redis

POLICIES = ("everysec", "always")


def xadd_round_trips(rounds: int, per_round: int) -> dict[str, dict[str, dict[str, float]]]:
    """Single and pipelined XADD latencies (ms) per policy, the policies alternating round by round."""
    singles: dict[str, list[float]] = {p: [] for p in POLICIES}
    bursts: dict[str, list[float]] = {p: [] for p in POLICIES}
    payload = os.urandom(300)
    with tempfile.TemporaryDirectory(prefix="tt-fsync-") as tmp:
        url, pid = start_redis(Path(tmp), durable=True)
        client = redis.Redis.from_url(url)
        try:
            for k in range(rounds * len(POLICIES)):
                policy = POLICIES[k % len(POLICIES)]
                client.config_set("appendfsync", policy)
                for _ in range(per_round):
                    started = time.perf_counter()
                    client.xadd("s", {"p": payload})
                    singles[policy].append((time.perf_counter() - started) * 1e3)
                    time.sleep(0.001)
                for _ in range(per_round // 50):
                    pipe = client.pipeline(transaction=False)
                    for _ in range(200):
                        pipe.xadd("s", {"p": payload})
                    started = time.perf_counter()
                    pipe.execute()
                    bursts[policy].append((time.perf_counter() - started) * 1e3)
        finally:
            client.close()
            os.kill(pid, signal.SIGKILL)
    return {p: {"XADD": summarize(singles[p]), "200 XADDs pipelined": summarize(bursts[p])} for p in POLICIES}


def copy_path(rate: float, windows: int, window_s: float) -> dict[str, dict[str, dict[str, float]]]:
    """ingest→POST, ingest→routed and routed→POST (ms) per policy, alternating windows on one stack."""
    hops: dict[str, dict[str, list[float]]] = {p: {} for p in POLICIES}
    with tempfile.TemporaryDirectory(prefix="tt-fsync-") as tmp:
        p = start_pipeline(Path(tmp) / "run")
        try:
            b = Bench(p)
            client = redis.Redis.from_url((p.run_dir / "redis_url").read_text().strip())
            leader, market = address(), b.market()
            wallets = set(b.subscribe([leader], 1)[leader])
            b.wait_followed([leader])
            b.wait_posts(wallets, b.drive(rate, 2.0, [(leader, market)]), 30)  # warm-up
            seen = {r.client_order_id for r in b.posts(wallets)}
            for k in range(windows):
                policy = POLICIES[k % len(POLICIES)]
                client.config_set("appendfsync", policy)
                since = b.post_count()
                sent = b.drive(rate, window_s, [(leader, market)])
                records = [r for r in b.wait_posts(wallets, sent, 60, since) if r.client_order_id not in seen]
                seen |= {r.client_order_id for r in records}
                for hop, values in b.hops(records).items():
                    hops[policy].setdefault(hop, []).extend(values)
            client.close()
        finally:
            p.stop(quiet=True)
    keep = ("ingest→POST", "ingest→routed", "routed→POST")
    return {policy: {h: summarize(v) for h, v in by_hop.items() if h in keep} for policy, by_hop in hops.items()}


def main(argv: list[str]) -> int:
    """Measure both; print and save."""
    parser = argparse.ArgumentParser(prog="python -m bench redis_fsync")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200.0, help="leader trades/s on the copy path")
    parser.add_argument("--windows", type=int, default=16, help="3 s windows on the copy path, policies alternating")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    results["xadd"] = xadd_round_trips(2 if args.quick else 5, 500 if args.quick else 1000)
    for policy in POLICIES:
        print(f"--- XADD round trips, appendfsync {policy}", flush=True)
        print_table(results["xadd"][policy])
    results["copy_path"] = copy_path(args.rate, 4 if args.quick else args.windows, 3.0)
    for policy in POLICIES:
        print(f"--- copy path at {args.rate:g} trades/s, appendfsync {policy}", flush=True)
        print_table(results["copy_path"][policy])
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_save:
        print(f"saved {save_results('redis_fsync', results, baseline=not args.quick)}", flush=True)
    return 0
