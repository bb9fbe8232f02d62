"""Positions after the copy, through the real stack: a market resolution settling many positions, and the
reconciliation of many LIVE wallets beside the copy path.

``python -m bench lifecycle [--quick] [--only settle,reconcile] [--positions 1000] [--wallets 300] [--runs 10]
[--reconcile-wallets 1000] [--reconcile-interval-s 300] [--rounds 3] [--no-save]`` starts the simulator and the stack
(:class:`tools.pipeline.Pipeline`), then measures:

(settle) ``--positions`` open LIVE positions of one market over ``--wallets`` proxy wallets (half on each
    outcome, booked in PostgreSQL as the executor books them and held at the Insiders fake), resolved on the
    simulator (the socket's ``market_resolved`` and the CLOB REST market), ``--runs`` times: from the resolution
    event (ingest's receive time of it, recorded with the resolution) to the last position settled and its caps
    freed (the settlement transaction: the router's next read sees them) — target p99 ≤ 1 s — and to the last
    redeem POST at the Insiders fake (one per winning wallet) — target ≤ 2 s;
(reconcile) scenario (a) of ``bench pipeline`` (one follower, 200 leader trades/s) run in one stack while
    ``--reconcile-wallets`` wallets (three positions each, booked and at the venue) are PAPER, then LIVE and
    reconciled, ``--rounds`` times in alternation (each phase's samples pooled over the rounds and compared;
    the medians of the rounds' p99s beside), at the pace ``--reconcile-interval-s``
    gives them (the default interval: 1,000 wallets at about 4 a second, each once in 80 % of it; 100 s puts the
    rounds at the reconciler's cap, 10 a second): target p99 within 10 %.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench import address, print_table, save_results, summarize
from bench._pipeline_harness import Bench
from bench.pipeline import scenario_a, start_pipeline
from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, book_key, watch_diff
from sim.polymarket import SimMarket

_BOOKED = """
INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd, id, state,
                       origin, subscription_id, venue, outcome, opened_at, updated_at)
SELECT r.w, r.a, r.c, r.p, r.s, r.avg, r.s * r.avg, 'pos_' || md5(r.w || r.a), 'OPEN', 'COPY', r.sub, 'INSIDERS',
       r.o, now() - interval '1 hour', now() - interval '1 hour'
FROM json_to_recordset(%s::json) AS r(w text, a text, c text, p text, s numeric, avg numeric, sub text, o text)
"""


def _database_url(p: Any) -> str:
    return (p.run_dir / "database_url").read_text().strip()


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
    with psycopg.connect(_database_url(p), autocommit=True) as conn:
        conn.execute(_BOOKED, (orjson.dumps(rows).decode(),))

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
    with psycopg.connect(_database_url(p), autocommit=True) as conn:
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


def _reconciled_wallets(b: Bench, n: int) -> list[str]:
    """``n`` wallets (subscribed through REST, PAPER: not reconciled until :func:`_go_live`) with three positions
    each, booked and at the venue."""
    p = b.p
    markets = [b.market() for _ in range(3)]
    leader = address()
    wallets = b.subscribe([leader], n, mode="EXECUTION_MODE_PAPER")[leader]
    rows = []
    for w in wallets:
        for m in markets:
            rows.append({"w": w, "a": m.tokens[0], "c": m.condition_id, "p": address(), "s": "50", "avg": "0.5",
                         "sub": "", "o": "Yes"})
    import orjson

    with psycopg.connect(_database_url(p), autocommit=True) as conn:
        conn.execute(_BOOKED, (orjson.dumps(rows).decode(),))

    def hold() -> None:
        for r in rows:
            p.sim.insiders.positions.setdefault(r["w"], {})[r["a"]] = [Decimal(50), Decimal(25)]

    p.sim.call(hold)
    return wallets


def _set_mode(b: Bench, wallets: list[str], mode: str) -> None:
    """The wallets' subscriptions become ``mode`` (in PostgreSQL, where the reconciler reads the LIVE wallets at
    each refresh), so everything else they cost the stack (guard's performance passes over their subscriptions)
    is there in both phases and only their reconciliation differs."""
    with psycopg.connect(_database_url(b.p), autocommit=True) as conn:
        conn.execute("UPDATE subscriptions SET mode = %s WHERE follower_wallet_id = ANY(%s)", (mode, wallets))


def _reconciled_since(b: Bench, since_s: float) -> int:
    with psycopg.connect(_database_url(b.p), autocommit=True) as conn:
        row = conn.execute("SELECT count(DISTINCT follower_wallet_id) FROM positions"
                           " WHERE reconciled_at > now() - make_interval(secs => %s)", (since_s,)).fetchone()
    return int(row[0]) if row else 0


def _wait_reconciling(b: Bench, active: bool, timeout_s: float = 150.0) -> None:
    """Until the reconciler works on the wallets (``active``) or has left them (nothing reconciled for 3 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recent = _reconciled_since(b, 3.0)
        if (recent > 0) if active else recent == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the reconciler did not {'start' if active else 'stop'} within {timeout_s:g}s")


def scenario_reconcile(b: Bench, wallets: int, rate: float, duration_s: float, warmup_s: float,
                       rounds: int) -> dict[str, Any]:
    """Scenario (a) with ``wallets`` wallets PAPER, then LIVE (reconciled beside it), ``rounds`` times in
    alternation (the machine's drift falls on both phases alike); the medians of the rounds are compared."""
    ids = _reconciled_wallets(b, wallets)
    phases: dict[str, list[dict[str, Any]]] = {"alone": [], "beside": []}
    pooled: dict[str, list[float]] = {"alone": [], "beside": []}
    reconciled: list[int] = []
    for _ in range(rounds):
        for phase, mode in (("alone", "PAPER"), ("beside", "LIVE")):
            _set_mode(b, ids, mode)
            _wait_reconciling(b, phase == "beside")
            phases[phase].append(scenario_a(b, rate, duration_s, warmup_s, pooled[phase]))
            if phase == "beside":
                reconciled.append(_reconciled_since(b, duration_s + warmup_s))

    def med(phase: str, key: str) -> float:
        return statistics.median(r["latency"]["ingest→POST"][key] for r in phases[phase])

    def cpu(phase: str) -> dict[str, float]:
        names = phases[phase][0]["cpu_ms_per_trade"]
        return {k: round(statistics.median(r["cpu_ms_per_trade"][k] for r in phases[phase]), 3) for k in names}

    p99 = med("alone", "p99_ms"), med("beside", "p99_ms")
    all_rounds = {phase: summarize(v) for phase, v in pooled.items()}
    return {"reconcile_wallets": wallets, "rounds": rounds, "wallets_reconciled_per_phase": reconciled,
            "latency_by_round": {phase: [r["latency"]["ingest→POST"] for r in runs] for phase, runs in phases.items()},
            "p50_ms": {"alone": med("alone", "p50_ms"), "beside": med("beside", "p50_ms")},
            "p99_ms": {"alone": p99[0], "beside": p99[1]},
            "p99_ratio": round(p99[1] / p99[0], 3) if p99[0] else None,
            "pooled": all_rounds,
            "pooled_p99_ratio": round(all_rounds["beside"]["p99_ms"] / all_rounds["alone"]["p99_ms"], 3)
            if all_rounds["alone"]["p99_ms"] else None,
            "cpu_ms_per_trade": {"alone": cpu("alone"), "beside": cpu("beside")},
            "target": "p99 within 10 % of the run alone (the rounds' samples pooled per phase)",
            **b.load_summary()}


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
    parser.add_argument("--rounds", type=int, default=3, help="reconcile: alternations of the two phases")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--keep-logs", default="", metavar="DIR",
                        help="copy the stack's service logs into DIR when the run ends")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    results: dict[str, Any] = {"quick": args.quick}
    # the default interval: 1,000 wallets at the pace production gives them (each once in 80 % of 300 s)
    tuning = {"TT_RECONCILE_INTERVAL_S": f"{args.reconcile_interval_s:g}"}
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        p = start_pipeline(Path(tmp) / "run", tuning=tuning)
        print(f"stack up (run folder {p.run_dir})", flush=True)
        try:
            b = Bench(p)
            if "reconcile" in only:
                results["reconcile"] = scenario_reconcile(
                    b, min(args.reconcile_wallets, 100) if args.quick else args.reconcile_wallets, 200.0,
                    5.0 if args.quick else 60.0, 2.0 if args.quick else 5.0, 1 if args.quick else args.rounds)
                r = results["reconcile"]
                print(f"--- (reconcile) {r['rounds']} rounds; medians alone / beside: p50 {r['p50_ms']['alone']:.2f} / "
                      f"{r['p50_ms']['beside']:.2f} ms, p99 {r['p99_ms']['alone']:.2f} / {r['p99_ms']['beside']:.2f} ms"
                      f" (ratio {r['p99_ratio']}); pooled p99 {r['pooled']['alone']['p99_ms']:.2f} / "
                      f"{r['pooled']['beside']['p99_ms']:.2f} ms (ratio {r['pooled_p99_ratio']}); wallets reconciled"
                      f" per phase {r['wallets_reconciled_per_phase']}", flush=True)
                for phase, rows in r["latency_by_round"].items():
                    print_table({f"{phase} {i + 1}": row for i, row in enumerate(rows)}, None)
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
