"""End to end through the real stack: RTDS frame received by ingest → order POST received by the Insiders fake.

``python -m bench pipeline [--quick] [--only a,b,c,e] [--rate-a 200] [--followers 1000] [--triggers 100000]
[--assets 5000] [--hot 500] [--quiet-runs] [--no-save]`` starts the simulator in this process and every
service as a supervised subprocess (:class:`tools.pipeline.Pipeline`, embedded PostgreSQL and Redis
under a temporary run folder), then measures:

(a) one follower, leader trades at 200/s for 60 s (targets p50 ≤ 3 ms, p99 ≤ 10 ms);
(b) one leader trade fanned out to 1,000 LIVE followers, 20 runs: frame received → last POST
    (target ≤ 200 ms at p99 of the runs), with each process's CPU per fan-out until the last POST and
    while settling; ``--quiet-runs`` starts each run only once the previous one's settling is over;
(c) 100 followed-leader trades/s × 10 followers each for 60 s: first vs second half (backlog growth);
(d) VmRSS of every supervised process at the end (target ≤ 250 MB each);
(e) guard: armed triggers in bulk, a CLOB book move → the SELL POST (see ``bench/_pipeline_guard.py``).

``--quick`` shortens every scenario (5 s drives, 200-follower fan-out, 10,000 triggers) for iteration.

Clocks: ingest stamps ``received_time_ns`` (``time.time_ns()``) on the LeaderTradeEvent, the router
copies it into every Order with its own ``routed_time_ns``; the Insiders fake stamps ``arrival_ns``
(``time.time_ns()``, first bytes of the POST). Same machine, same wall clock, so they subtract. The
Orders are read back from the router's durable log (``tt:stream:routed_trades``) and joined to the
fake's POST log by client order id. ``sim→POST`` uses the wall time taken on the simulator's loop
just before it wrote the frame. Trades go on RTDS only (the data-api poller would see the same
trades again and dedupe them; it is slowed to its production 60 s interval).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from bench import CpuMeter, address, memory_mb, print_table, save_results, storage_pids, summarize
from bench._pipeline_guard import scenario_e
from common.streams import ROUTED_TRADES
from sim.polymarket import SimMarket
from tools.pipeline import Pipeline, PipelineError, free_port_env, isolated_env
from tradingtools.execution.v1 import execution_pb2 as epb

TUNING = {"TT_INGEST_POLL_INTERVAL_S": "60", "TT_INGEST_POLL_GAP_FOLLOWUP_S": "60",
          "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_", "268435456")}
FIXED = {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "5"}
RSS_TARGET_MB = 250.0
FINAL = ("confirmed", "failed", "cancelled")


class Bench:
    """A running pipeline plus the joins between its logs."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.redis = redis.Redis.from_url((p.run_dir / "redis_url").read_text().strip())
        self.stream_pos = "0-0"
        self.orders: dict[str, epb.Order] = {}
        self.sent_ns: dict[str, int] = {}
        self.load: list[tuple[float, float, float]] = []

    # -- setup ----------------------------------------------------------------------------------

    def market(self) -> SimMarket:
        """A market with very deep books so depth checks never bind."""
        return self.p.sim.call(self.p.sim.sim.add_market, levels=5, level_size="2000000")

    def subscribe(self, leaders: Iterable[str], per_leader: int) -> dict[str, list[str]]:
        """``per_leader`` fresh LIVE followers per leader through REST (Envoy); leader → wallet ids."""
        out: dict[str, list[str]] = {}
        with self.p.rest(timeout_s=30) as rest:
            for leader in leaders:
                for _ in range(per_leader):
                    wallet = f"w_{secrets.token_hex(6)}"
                    body = {"followerUserId": f"u_{wallet}", "followerWalletId": wallet, "followerProxy": address(),
                            "leaderProxy": leader, "mode": "EXECUTION_MODE_LIVE", "sizing": FIXED,
                            "filters": {"copySells": True}}
                    reply = rest.post("/subscriptions", json=body)
                    if reply.status_code != 200:
                        raise RuntimeError(f"subscription: {reply.status_code} {reply.text}")
                    out.setdefault(leader, []).append(wallet)
        return out

    def wait_followed(self, leaders: Iterable[str], timeout_s: float = 60.0) -> None:
        """Ingest follows every leader once its poller asked the data-api about it."""
        want = set(leaders)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            asked = self.p.sim.call(lambda: {q.get("user") for _p, q in self.p.sim.sim.data.requests})
            if want <= asked:
                time.sleep(0.5)  # the RTDS subscription follows the backfill
                return
            time.sleep(0.1)
        raise RuntimeError(f"ingest does not follow {len(want - asked)} leaders")

    # -- driving --------------------------------------------------------------------------------

    def drive(self, rate_per_s: float, duration_s: float, plan: list[tuple[str, SimMarket]]) -> int:
        """Leader trades at ``rate_per_s`` for ``duration_s`` (round robin over ``plan``) on RTDS."""
        sim, sent = self.p.sim.sim, self.sent_ns

        async def run() -> int:
            loop = asyncio.get_running_loop()
            start, interval, n = loop.time(), 1.0 / rate_per_s, 0
            while n * interval < duration_s:
                delay = start + n * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                leader, market = plan[n % len(plan)]
                tx = "0x" + secrets.token_hex(32)
                sent[tx] = time.time_ns()
                sim.trade(leader, market=market, token=market.tokens[0], price="0.51", size="100", tx=tx,
                          feeds=("rtds",))
                n += 1
                if n % max(1, int(rate_per_s)) == 0:
                    self.load.append(os.getloadavg())
            return n

        return self.p.sim.run(run(), timeout_s=duration_s + 60)

    # -- collecting -----------------------------------------------------------------------------

    def posts(self, wallets: set[str], since: int = 0) -> list[Any]:
        """Created POSTs of these wallets (the fake's record), from its ``since``-th POST on."""
        return self.p.sim.call(lambda: [r for r in self.p.sim.insiders.posts[since:]
                                        if r.outcome == "created" and (r.body or {}).get("walletId") in wallets])

    def post_count(self) -> int:
        """POSTs the fake recorded so far (a later POST is recorded after this index)."""
        return self.p.sim.call(lambda: len(self.p.sim.insiders.posts))

    def wait_posts(self, wallets: set[str], count: int, timeout_s: float, since: int = 0) -> list[Any]:
        """Wait until ``count`` orders of these wallets were created from the fake's ``since``-th POST on
        (or time out; returns what came). ``since`` keeps the fake's loop from rescanning old POSTs while
        it is timing new ones."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.post_count() - since >= count:  # cheap check first: the scan runs on the fake's loop
                got = self.posts(wallets, since)
                if len(got) >= count:
                    return got
            time.sleep(0.05)
        return self.posts(wallets, since)

    def read_orders(self) -> None:
        """New Orders from the router's durable log, by client order id."""
        while True:
            rows: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(  # type: ignore[assignment]
                ROUTED_TRADES, min=f"({self.stream_pos}", count=500)
            if not rows:
                return
            for entry_id, fields in rows:
                routed = epb.RoutedTrade.FromString(fields[b"p"])
                for order in routed.orders:
                    self.orders[order.client_order_id] = order
                self.stream_pos = entry_id.decode()

    def hops(self, records: list[Any]) -> dict[str, list[float]]:
        """Per-POST latencies (ms) of each hop; POSTs whose Order is not in the log are skipped."""
        self.read_orders()
        out: dict[str, list[float]] = {"ingest→POST": [], "ingest→routed": [], "routed→POST": [], "sim→POST": []}
        for r in records:
            o = self.orders.get(r.client_order_id)
            if o is None or not o.received_time_ns:
                continue
            out["ingest→POST"].append((r.arrival_ns - o.received_time_ns) / 1e6)
            out["ingest→routed"].append((o.routed_time_ns - o.received_time_ns) / 1e6)
            out["routed→POST"].append((r.arrival_ns - o.routed_time_ns) / 1e6)
            if (sent := self.sent_ns.get(o.leader_tx_hash)) is not None:
                out["sim→POST"].append((r.arrival_ns - sent) / 1e6)
        return out

    def cpu_meter(self) -> CpuMeter:
        """CPU of every supervised program, PostgreSQL, Redis and this process (simulator + bench)."""
        groups: dict[str, list[int]] = {}
        for name in ("control", "ingest", "router", "executor", "guard", "envoy"):
            try:
                groups[name] = [int(self.p.program(name).get("pid") or 0)]
            except KeyError:
                continue
        groups.update(storage_pids(self.p.run_dir))
        groups["sim+bench"] = [os.getpid()]
        return CpuMeter(groups)

    def wait_idle(self, wallets: set[str], orders: int, timeout_s: float = 30.0, *, quiet: bool = False) -> None:
        """Until every created order of these wallets was confirmed at the fake (status polled to a final
        state), so the next fan-out run starts on a stack that is not still settling the previous one;
        with ``quiet``, also until the services' CPU use has died down (:meth:`wait_quiet`)."""
        fake = self.p.sim.insiders
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.p.sim.call(lambda: sum(1 for o in fake.orders.values()
                                               if o.wallet_id in wallets and o.status in FINAL))
            if done >= orders:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # the executor's journal and guard finish their last writes
        if quiet:
            self.wait_quiet()

    def wait_quiet(self, window_s: float = 0.1, max_busy: float = 0.1, timeout_s: float = 15.0) -> None:
        """Until the services and storage together use under ``max_busy`` of one core over ``window_s``
        (the previous run's confirmations, journal writes and guard bookkeeping are done)."""
        meter = self.cpu_meter()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            meter.start()
            time.sleep(window_s)
            used = sum(v for k, v in meter.stop().items() if k != "sim+bench")
            if used < window_s * max_busy:
                return

    def load_summary(self) -> dict[str, Any]:
        """Load averages sampled during the last drive (and now)."""
        samples, self.load = self.load, []
        now = os.getloadavg()
        peak = max((s[0] for s in samples), default=now[0])
        return {"load1_max": round(peak, 2), "load_at_end": [round(x, 2) for x in now]}


# -- the scenarios ----------------------------------------------------------------------------------


def scenario_a(b: Bench, rate: float, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """One follower at ``rate`` leader trades/s."""
    leader, market = address(), b.market()
    wallets = set(b.subscribe([leader], 1)[leader])
    b.wait_followed([leader])
    warm = b.drive(rate, warmup_s, [(leader, market)])
    b.wait_posts(wallets, warm, 30)
    skip = {r.client_order_id for r in b.posts(wallets)}
    meter = b.cpu_meter()
    meter.start()
    sent = b.drive(rate, duration_s, [(leader, market)])
    records = [r for r in b.wait_posts(wallets, warm + sent, 240) if r.client_order_id not in skip]
    cpu = meter.stop()
    rows = {k: summarize(v) for k, v in b.hops(records).items()}
    return {"rate_per_s": rate, "duration_s": duration_s, "trades": sent, "posts": len(records),
            "cpu_ms_per_trade": {k: round(v * 1e3 / max(1, sent), 3) for k, v in cpu.items()},
            "latency": rows, "targets": {"p50_ms": 3, "p99_ms": 10}, **b.load_summary()}


def scenario_b(b: Bench, followers: int, runs: int, quiet: bool = False) -> dict[str, Any]:
    """One leader trade → ``followers`` LIVE orders, ``runs`` times: first and last POST after the frame.
    With ``quiet`` each run starts once the previous one's settling (confirmations, journal, guard) is
    done, so a run measures one fan-out alone rather than one on top of the last one's tail."""
    leader, market = address(), b.market()
    started = time.monotonic()
    wallets = set(b.subscribe([leader], followers)[leader])
    setup_s = time.monotonic() - started
    b.wait_followed([leader])
    firsts: list[float] = []
    lasts: list[float] = []
    sim_lasts: list[float] = []
    routed: list[float] = []
    seen: set[str] = set()
    incomplete: list[dict[str, int]] = []
    send_cpu: dict[str, float] = {}  # CPU from the frame until every POST arrived, summed over the runs
    settle_cpu: dict[str, float] = {}  # CPU from then until every order was confirmed
    for i in range(runs + 1):  # the first run warms up
        since = b.post_count()
        meter = b.cpu_meter()
        meter.start()
        b.drive(1000.0, 0.0005, [(leader, market)])
        records = [r for r in b.wait_posts(wallets, followers, 30, since) if r.client_order_id not in seen]
        sent_cpu = meter.stop()
        seen |= {r.client_order_id for r in records}
        h = b.hops(records)
        if i and len(h["ingest→POST"]) != followers:
            incomplete.append({"run": i, "posts": len(records), "joined": len(h["ingest→POST"])})
        if i == 0 or not h["ingest→POST"]:
            b.wait_idle(wallets, len(seen), quiet=quiet)  # the warm-up settles before the first measured run
            continue
        firsts.append(min(h["ingest→POST"]))
        lasts.append(max(h["ingest→POST"]))
        sim_lasts.append(max(h["sim→POST"]) if h["sim→POST"] else float("nan"))
        routed.append(max(h["ingest→routed"]))
        meter.start()
        b.wait_idle(wallets, len(seen), quiet=quiet)
        idle_cpu = meter.stop()
        for name, cpu_s in sent_cpu.items():
            send_cpu[name] = send_cpu.get(name, 0.0) + cpu_s
            settle_cpu[name] = settle_cpu.get(name, 0.0) + idle_cpu.get(name, 0.0)
    n = max(1, len(lasts))
    return {"followers": followers, "runs": len(lasts), "quiet_between_runs": quiet, "incomplete_runs": incomplete,
            "subscribe_s": round(setup_s, 1),
            "cpu_ms_per_fanout_to_last_post": {k: round(v * 1e3 / n, 1) for k, v in send_cpu.items()},
            "cpu_ms_per_fanout_settling": {k: round(v * 1e3 / n, 1) for k, v in settle_cpu.items()},
            "last_post_ms_by_run": [round(v, 1) for v in lasts],
            "latency": {"ingest→first POST": summarize(firsts), "ingest→last POST": summarize(lasts),
                        "sim→last POST": summarize(sim_lasts), "ingest→routed": summarize(routed)},
            "target_last_ms": 200, **b.load_summary()}


def scenario_c(b: Bench, rate: float, leaders: int, followers: int, duration_s: float) -> dict[str, Any]:
    """``rate`` followed-leader trades/s over ``leaders`` leaders, ``followers`` each; halves compared."""
    names = [address() for _ in range(leaders)]
    plan = [(leader, b.market()) for leader in names]
    subs = b.subscribe(names, followers)
    wallets = {w for ws in subs.values() for w in ws}
    b.wait_followed(names)
    warm = b.drive(rate, 2.0, plan)
    b.wait_posts(wallets, warm * followers, 30)
    skip = {r.client_order_id for r in b.posts(wallets)}
    meter = b.cpu_meter()
    meter.start()
    t0 = time.time_ns()
    sent = b.drive(rate, duration_s, plan)
    records = [r for r in b.wait_posts(wallets, (warm + sent) * followers, 240) if r.client_order_id not in skip]
    cpu = meter.stop()
    mid = t0 + int(duration_s * 1e9 / 2)
    b.read_orders()

    def received(r: Any) -> int:
        o = b.orders.get(r.client_order_id)
        return o.received_time_ns if o is not None else 0

    first = b.hops([r for r in records if 0 < received(r) < mid])
    second = b.hops([r for r in records if received(r) >= mid])
    rows = {f"1st half {k}": summarize(v) for k, v in first.items() if k in ("ingest→POST", "sim→POST")}
    rows |= {f"2nd half {k}": summarize(v) for k, v in second.items() if k in ("ingest→POST", "sim→POST")}
    return {"rate_per_s": rate, "leaders": leaders, "followers_per_leader": followers, "duration_s": duration_s,
            "trades": sent, "posts_expected": sent * followers, "posts": len(records), "latency": rows,
            "cpu_ms_per_order": {k: round(v * 1e3 / max(1, len(records)), 3) for k, v in cpu.items()},
            **b.load_summary()}


def rss(p: Pipeline) -> dict[str, float]:
    """VmRSS (MB) of every supervised program."""
    out: dict[str, float] = {}
    for name in ("control", "ingest", "router", "executor", "guard", "envoy"):
        try:
            pid = int(p.program(name).get("pid") or 0)
            if "VmRSS" in (mem := memory_mb(pid)):
                out[name] = round(mem["VmRSS"], 1)
        except (KeyError, OSError, ValueError):
            continue
    return out


def start_pipeline(run_dir: Path) -> Pipeline:
    """The simulator and the stack with embedded storage under ``run_dir``."""
    env = isolated_env()
    env.update(free_port_env())
    env.update({"TT_STACK_READY_TIMEOUT_S": "120"})
    lines: list[str] = []
    try:
        return Pipeline.start(run_dir, env=env, seed=None, tuning=TUNING, out=lines.append)
    except PipelineError:
        print("\n".join(lines), flush=True)
        raise


def _show(title: str, result: dict[str, Any], target: float | None = None) -> None:
    extra = {k: v for k, v in result.items() if k not in ("latency", "load1_max", "load_at_end")}
    print(f"--- {title} (load1 max {result.get('load1_max')}) {extra}", flush=True)
    print_table(result["latency"], target)


def main(argv: list[str]) -> int:
    """Run the scenarios; print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench pipeline")
    parser.add_argument("--quick", action="store_true", help="short durations (seconds, not minutes)")
    parser.add_argument("--only", default="a,b,c,e", help="comma-separated scenarios among a,b,c,e")
    parser.add_argument("--triggers", type=int, default=100_000, help="armed triggers for (e)")
    parser.add_argument("--assets", type=int, default=5_000, help="assets of those triggers for (e)")
    parser.add_argument("--hot", type=int, default=500,
                        help="measured crossings for (e), one at a time (p99 is the 5th worst of 500)")
    parser.add_argument("--rate-a", type=float, default=200.0, help="leader trades/s for (a)")
    parser.add_argument("--followers", type=int, default=1000, help="fan-out size for (b)")
    parser.add_argument("--quiet-runs", action="store_true",
                        help="(b): start each run once the stack's CPU use from the previous one died down")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    duration = 5.0 if args.quick else 60.0
    results: dict[str, Any] = {"quick": args.quick}
    steps: dict[str, Callable[[Bench], dict[str, Any]]] = {
        "a": lambda b: scenario_a(b, args.rate_a, duration, 2.0 if args.quick else 5.0),
        "b": lambda b: scenario_b(b, args.followers if not args.quick else min(args.followers, 200),
                                  3 if args.quick else 20, args.quiet_runs),
        "c": lambda b: scenario_c(b, 100.0, 10, 10, duration),
        "e": lambda b: scenario_e(b, args.triggers if not args.quick else min(args.triggers, 10_000),
                                  args.assets if not args.quick else min(args.assets, 500),
                                  min(args.hot, 20) if args.quick else args.hot),
    }
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        started = time.monotonic()
        p = start_pipeline(Path(tmp) / "run")
        print(f"stack up in {time.monotonic() - started:.1f}s", flush=True)
        try:
            b = Bench(p)
            for key in ("a", "b", "c", "e"):
                if key in only:
                    results[key] = steps[key](b)
                    _show({"a": f"(a) 1 follower, {args.rate_a:g} trades/s", "b": "(b) fan-out, per run",
                           "c": "(c) 100 trades/s x 10 followers",
                           "e": "(e) guard: price tick → SELL POST"}[key], results[key],
                          {"a": 10.0, "b": 200.0, "c": None, "e": 5.0}[key])
            results["rss_mb"] = rss(p)
            print(f"--- (d) VmRSS MB: {results['rss_mb']} (target ≤ {RSS_TARGET_MB:g} each)", flush=True)
            results["restarts"] = {n: p.program(n).get("restarts") for n in ("ingest", "router", "executor")}
        finally:
            p.stop(quiet=True)
    if not args.no_save:
        print(f"saved {save_results('pipeline', results)}", flush=True)
    return 0
