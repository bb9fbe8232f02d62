"""Positions after the copy, through the real stack: a market resolution settling many positions, and the
reconciliation of many LIVE wallets beside the copy path.

``python -m bench lifecycle [--quick] [--only settle,reconcile] [--positions 1000] [--wallets 300] [--runs 10]
[--reconcile-wallets 1000] [--reconcile-interval-s 300] [--reconcile-s 300] [--block-s 10] [--no-save]``
starts the simulator and the stack
(:class:`tools.pipeline.Pipeline`), then measures:

(settle) ``--positions`` open LIVE positions of one market over ``--wallets`` proxy wallets (half on each
    outcome, booked in PostgreSQL as the executor books them and held at the Insiders fake), resolved on the
    simulator (the socket's ``market_resolved`` and the CLOB REST market), ``--runs`` times: from the resolution
    event (ingest's receive time of it, recorded with the resolution) to the last position settled and its caps
    freed (the settlement transaction: the router's next read sees them) — target p99 ≤ 1 s — and to the last
    redeem POST at the Insiders fake (one per winning wallet) — target ≤ 2 s;
(reconcile) scenario (a) of ``bench pipeline`` (one follower, 200 leader trades/s) driven ``--reconcile-s`` seconds
    in one stack while ``--reconcile-wallets`` wallets (three positions each, booked and at the venue) switch
    between PAPER and LIVE every ``--block-s`` seconds, reconciled when LIVE at the pace
    ``--reconcile-interval-s`` gives them (the default interval: 1,000 wallets at about 4 a second, each once
    in 80 % of it; 100 s puts the rounds at the reconciler's cap, 10 a second); each copy counts for the phase
    its trade was received in, the phases' samples pooled: target p99 within 10 %
    (``bench/_lifecycle_reconcile.py``).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench import address, print_table, save_results, summarize
from bench._lifecycle_reconcile import BOOKED, database_url, scenario_reconcile
from bench._pipeline_harness import Bench
from bench.pipeline import start_pipeline
from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, book_key, watch_diff
from sim.polymarket import SimMarket


def _book_positions(p: Any, market: SimMarket, positions: int, wallets: int, *, size: Decimal = Decimal(100),
                    avg: Decimal = Decimal("0.4")) -> list[str]:
    """``positions`` open positions of ``market`` over ``wallets`` proxies (two outcomes per follower wallet id),
    booked in PostgreSQL and held at the Insiders fake; returns the follower wallet ids."""
    import orjson

    proxies = [address() for _ in range(wallets)]
    ids = [f"w_bench_{secrets.token_hex(5)}" for _ in range((positions + 1) // 2)]
    rows = []
    for i in range(positions):
        wid = ids[i // 2]
        token = market.tokens[i % 2]
        rows.append({"w": wid, "a": token, "c": market.condition_id, "p": proxies[i % wallets], "s": str(size),
                     "avg": str(avg), "sub": f"sub_bench_{wid}", "o": market.outcomes[i % 2]})
    with psycopg.connect(database_url(p), autocommit=True) as conn:
        conn.execute(BOOKED, (orjson.dumps(rows).decode(),))

    def hold() -> None:
        for r in rows:
            p.sim.insiders.positions.setdefault(r["w"], {})[r["a"]] = [size, size * avg]

    p.sim.call(hold)
    _watched(p, list(market.tokens))
    return ids


def _watched(p: Any, assets: list[str], timeout_s: float = 30.0) -> None:
    """Announce the held assets as the executor does when their positions open (ingest subscribes to their books
    and so hears the socket's ``market_resolved``), and wait until ingest has their books."""
    import redis

    client = redis.Redis.from_url((p.run_dir / "redis_url").read_text().strip())
    try:
        pipe = client.pipeline(transaction=True)
        pipe.sadd(WATCH_POSITIONS, *assets)
        pipe.publish(WATCH_CHANNEL, watch_diff(WATCH_POSITIONS, assets, ()))
        pipe.execute()
        deadline = time.monotonic() + timeout_s
        while not all(client.exists(book_key(a)) for a in assets):
            if time.monotonic() > deadline:
                raise RuntimeError("ingest did not pick up the held assets' books")
            time.sleep(0.05)
    finally:
        client.close()


def _settle_run(b: Bench, positions: int, wallets: int, timeout_s: float = 60.0) -> dict[str, float]:
    p = b.p
    market = b.market()
    ids = _book_positions(p, market, positions, wallets)
    since = p.sim.call(lambda: len(p.sim.insiders.holdings.records))
    p.sim.call(p.sim.sim.resolve, market, market.tokens[0])
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url(p), autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE state <> 'OPEN'), max(resolved_at),"
                " (SELECT received_at FROM market_resolutions WHERE condition_id = %s)"
                " FROM positions WHERE condition_id = %s", (market.condition_id, market.condition_id)).fetchone()
            assert row is not None
            done, last_settled, event_at = row
            posts = p.sim.call(lambda: [r for r in p.sim.insiders.holdings.records[since:]
                                        if r.condition_id == market.condition_id and r.outcome == "created"])
            if done >= positions and len(posts) >= len(ids) and event_at is not None:
                break
            if time.monotonic() > deadline:
                states = conn.execute("SELECT state, reason, count(*), max(attempts) FROM redemptions"
                                      " WHERE condition_id = %s GROUP BY 1, 2", (market.condition_id,)).fetchall()
                raise RuntimeError(f"settlement not done in {timeout_s:g}s: {done} of {positions} settled, "
                                   f"{len(posts)} of {len(ids)} redeem POSTs; redemptions {states}")
            time.sleep(0.05)
    event_ns = int(event_at.timestamp() * 1e9)
    return {"settled_ms": (last_settled.timestamp() * 1e9 - event_ns) / 1e6,
            "last_redeem_post_ms": (max(r.arrival_ns for r in posts) - event_ns) / 1e6}


def scenario_settle(b: Bench, positions: int, wallets: int, runs: int) -> dict[str, Any]:
    """``runs`` resolutions of a market holding ``positions`` open positions over ``wallets`` wallets."""
    settled, redeemed = [], []
    for i in range(runs + 1):  # the first warms up
        got = _settle_run(b, positions, wallets)
        if i:
            settled.append(got["settled_ms"])
            redeemed.append(got["last_redeem_post_ms"])
    return {"positions": positions, "wallets": wallets, "runs": runs,
            "latency": {"event→last settled (caps freed)": summarize(settled),
                        "event→last redeem POST": summarize(redeemed)},
            "targets": {"settled_p99_ms": 1000, "last_redeem_post_ms": 2000}, **b.load_summary()}


def main(argv: list[str]) -> int:
    """Run the scenarios; print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench lifecycle")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="settle,reconcile")
    parser.add_argument("--positions", type=int, default=1000)
    parser.add_argument("--wallets", type=int, default=300)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--reconcile-wallets", type=int, default=1000)
    parser.add_argument("--reconcile-interval-s", type=float, default=300.0,
                        help="TT_RECONCILE_INTERVAL_S of the stack (100: the rounds at the reconciler's cap, 10/s)")
    parser.add_argument("--reconcile-s", type=float, default=300.0, help="reconcile: the drive's length")
    parser.add_argument("--block-s", type=float, default=10.0, help="reconcile: seconds between PAPER / LIVE switches")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--keep-logs", default="", metavar="DIR",
                        help="copy the stack's service logs into DIR when the run ends")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    results: dict[str, Any] = {"quick": args.quick}
    # the default interval: 1,000 wallets at the pace production gives them (each once in 80 % of 300 s)
    tuning = {"TT_RECONCILE_INTERVAL_S": f"{args.reconcile_interval_s:g}",
              "TT_TUNE_EXECUTOR_RECONCILE_REFRESH_S": "1"}  # a switch of the wallets' mode takes effect in a second
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        p = start_pipeline(Path(tmp) / "run", tuning=tuning)
        print(f"stack up (run folder {p.run_dir})", flush=True)
        try:
            b = Bench(p)
            if "reconcile" in only:
                results["reconcile"] = scenario_reconcile(
                    b, min(args.reconcile_wallets, 100) if args.quick else args.reconcile_wallets, 200.0,
                    10.0 if args.quick else args.reconcile_s, 2.0 if args.quick else 5.0,
                    block_s=2.5 if args.quick else args.block_s, settle_s=1.0 if args.quick else 2.0)
                r = results["reconcile"]
                print(f"--- (reconcile) {r['blocks']} blocks of {r['block_s']:g} s; alone / beside: p50 "
                      f"{r['p50_ms']['alone']:.2f} / {r['p50_ms']['beside']:.2f} ms, p99 {r['p99_ms']['alone']:.2f} / "
                      f"{r['p99_ms']['beside']:.2f} ms (ratio {r['p99_ratio']}); wallets reconciled "
                      f"{r['wallets_reconciled']}", flush=True)
                print_table(r["latency"], None)
            if "settle" in only:
                results["settle"] = scenario_settle(b, min(args.positions, 200) if args.quick else args.positions,
                                                    min(args.wallets, 60) if args.quick else args.wallets,
                                                    2 if args.quick else args.runs)
                done = results["settle"]
                print(f"--- (settle) {done['positions']} positions over {done['wallets']} wallets, {done['runs']} runs",
                      flush=True)
                latency = results["settle"]["latency"]
                print_table({k: v for k, v in latency.items() if "settled" in k}, 1000.0)
                print_table({k: v for k, v in latency.items() if "redeem" in k}, 2000.0)
        finally:
            p.stop(quiet=True)
            if args.keep_logs:
                shutil.copytree(Path(tmp) / "run" / "logs", Path(args.keep_logs), dirs_exist_ok=True)
    if not args.no_save:
        path = save_results("lifecycle", results, baseline=not args.quick and only == {"settle", "reconcile"})
        print(f"saved {path}", flush=True)
    return 0
