"""End to end through the real stack: RTDS frame received by ingest → order POST received by the Insiders fake.

``python -m bench pipeline [--quick] [--only a,b,c,e,f,g] [--rate-a 200] [--followers 1000] [--triggers 100000]
[--assets 5000] [--hot 500] [--quiet-runs] [--no-save]`` starts the simulator in this process and every
service as a supervised subprocess (:class:`tools.pipeline.Pipeline`, embedded PostgreSQL and Redis
under a temporary run folder), then measures:

(a) one follower, leader trades at 200/s for 60 s (targets p50 ≤ 2.5 ms, p99 ≤ 8 ms), then the copy chain's
    transports alone (``bench hops`` against the stack's Redis and PostgreSQL, ``TT_BENCH_FLOOR=0`` skips it):
    their latency and the CPU per copy of our side of them, the floor under (a)'s figures;
(b) one leader trade fanned out to 1,000 LIVE followers, 20 runs: frame received → last POST
    (target ≤ 150 ms at p99 of the runs; 1.5 s with ``--followers 10000``), with each process's CPU per
    fan-out until the last POST and while settling; ``--quiet-runs`` starts each run only once the previous
    one's settling is over;
(c) 100 followed-leader trades/s × 10 followers each for 60 s: first vs second half (backlog growth);
(d) VmRSS of every supervised process at the end (target ≤ 250 MB each);
(e) guard: armed triggers in bulk, a CLOB book move → the SELL POST (see ``bench/_pipeline_guard.py``);
(f) the executor stopped 10 s (``--stall-s``) under (c)'s load: its peak VmRSS and the backlog's drain
    (``bench/_pipeline_stall.py``);
(g) only when asked (``--only g``): the throughput ceiling, leader trades to 10 leaders x 10 followers at a rising
    rate, the highest that holds p99 ingest → POST ≤ 50 ms with no growing backlog (``bench/_pipeline_ceiling.py``).

``--quick`` shortens every scenario (5 s drives, 200-follower fan-out, 10,000 triggers) for iteration.

Clocks: ingest stamps ``received_time_ns`` (``time.time_ns()``) on the LeaderTradeEvent, the router
copies it into every Order with its own ``routed_time_ns``; the Insiders fake stamps ``arrival_ns``
(the kernel's receive time of the POST, ``SO_TIMESTAMPNS``: not when the fake's busy loop
read it, see :mod:`sim.rxstamp`). Same machine, same wall clock, so they subtract. The
Orders are read back from the router's durable log (``tt:stream:routed_trades``) and joined to the
fake's POST log by client order id. ``sim→POST`` uses the wall time taken on the simulator's loop
just before it wrote the frame. Trades go on RTDS only (the data-api poller would see the same
trades again and dedupe them; it is slowed to its production 60 s interval), except (b)'s: its runs are
about as far apart as ingest's reopening of a quiet RTDS socket (15 s), so its trade goes on the data-api
too, as a leader's fill does, and one published while the socket reconnects comes by the poll ingest makes
once it is back; (b) reports such runs (``runs_not_heard_on_rtds``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import address, memory_mb, print_table, save_results, summarize
from bench._pipeline_ceiling import scenario_g
from bench._pipeline_guard import scenario_e
from bench._pipeline_harness import MILESTONES, RSS_TARGET_MB, Bench, no_full_collections
from bench._pipeline_stall import scenario_f
from bench.hops import run_against
from sim.polymarket import SimMarket
from tools.pipeline import HARNESS_TUNING, Pipeline, PipelineError, free_port_env, isolated_env

# The services run their production tuning: every setting the test harness shortens (reconciliation every 2 s,
# guard's rules every 0.5 s, ...) is set empty, which a service reads as its own default. The supervisor's own
# settings (TT_STACK_*) stay the harness's.
TUNING = {**{k: "" for k in HARNESS_TUNING if not k.startswith("TT_STACK_")},
          "TT_TUNE_INGEST_POLL_INTERVAL_S": "60", "TT_TUNE_INGEST_POLL_GAP_FOLLOWUP_S": "60",
          "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_", "268435456")}


# -- the scenarios ----------------------------------------------------------------------------------


def warmed_follower(b: Bench, rate: float, warmup_s: float) -> tuple[str, SimMarket, set[str], int, set[str]]:
    """A new leader with one LIVE follower, driven ``warmup_s`` at ``rate`` until its copies are in: the leader,
    its market, the follower's wallets, the warm-up's trades and their client order ids (to leave out)."""
    leader, market = address(), b.market()
    wallets = set(b.subscribe([leader], 1)[leader])
    b.wait_followed([leader])
    warm = b.drive(rate, warmup_s, [(leader, market)])
    b.wait_posts(wallets, warm, 30)
    return leader, market, wallets, warm, {r.client_order_id for r in b.posts(wallets)}


def scenario_a(b: Bench, rate: float, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """One follower at ``rate`` leader trades/s."""
    leader, market, wallets, warm, skip = warmed_follower(b, rate, warmup_s)
    meter = b.cpu_meter()
    meter.start()
    sent = b.drive(rate, duration_s, [(leader, market)])
    records = [r for r in b.wait_posts(wallets, warm + sent, 240) if r.client_order_id not in skip]
    cpu = meter.stop()
    rows = {k: summarize(v) for k, v in b.hops(records).items()}
    stages = {k: summarize(v) for k, v in b.stages(records).items()}
    return {"rate_per_s": rate, "duration_s": duration_s, "trades": sent, "posts": len(records), "stages": stages,
            "cpu_ms_per_trade": {k: round(v * 1e3 / max(1, sent), 3) for k, v in cpu.items()},
            "latency": rows, "targets": {"p50_ms": 2.5, "p99_ms": 8}, **b.load_summary(),
            "copy_floor": copy_floor(b, samples=100 if duration_s < 10 else 400)}


def copy_floor(b: Bench, samples: int) -> dict[str, Any] | None:
    """The copy chain's transports alone, against the stack's Redis and PostgreSQL once (a)'s trades are in, one
    message every 1 ms and every 5 ms (a's spacing at 200 trades/s): the drawn totals of their latency and the
    CPU per copy of our side of them (``bench hops``); None when it could not be measured."""
    if os.environ.get("TT_BENCH_FLOOR", "1") == "0":
        return None
    report = run_against((b.p.run_dir / "redis_url").read_text().strip(),
                         (b.p.run_dir / "database_url").read_text().strip(), chain="copy", gaps_ms="1,5",
                         samples=samples)
    if report is None:
        return None
    return {gap: {"drawn_p50_ms": f["drawn_p50_ms"], "drawn_p99_ms": f["drawn_p99_ms"],
                  "cpu_ms_per_copy": round(report["copy_cpu_floor_us"][gap] / 1e3, 3)}
            for gap, f in report["floor"].items() if gap in report.get("copy_cpu_floor_us", {})}


def fanout_target_ms(followers: int) -> int:
    """The issue's target for the last POST of one leader trade: 150 ms up to 1,000 followers, 1.5 s up to 10,000."""
    return 150 if followers <= 1000 else 1500


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
    timelines: dict[str, list[float]] = {name: [] for name in MILESTONES}
    by_run: list[dict[str, float]] = []  # each measured run's milestones: a slow run shows where it lost its time
    seen: set[str] = set()
    incomplete: list[dict[str, int]] = []
    unheard_runs: list[int] = []  # runs whose trade found ingest's RTDS socket reconnecting (came by the poller)
    send_cpu: dict[str, float] = {}  # CPU from the frame until every POST arrived, summed over the runs
    settle_cpu: dict[str, float] = {}  # CPU from then until every order was confirmed
    for i in range(runs + 1):  # the first run warms up
        since = b.post_count()
        meter = b.cpu_meter()
        meter.start()
        unheard = b.unheard
        # on both feeds, as a leader's fill is: a trade published while ingest's RTDS socket reconnects (a
        # quiet feed is reopened after 15 s; these runs are about that far apart) comes by the data-api poller
        b.drive(1000.0, 0.0005, [(leader, market)], feeds=("rtds", "data_api"))
        records = [r for r in b.wait_posts(wallets, followers, 30, since) if r.client_order_id not in seen]
        sent_cpu = meter.stop()
        ids = {r.client_order_id for r in records}
        seen |= ids
        h = b.hops(records)
        if i and b.unheard > unheard:
            unheard_runs.append(i)
        if i and len(h["ingest→POST"]) != followers:
            incomplete.append({"run": i, "posts": len(records), "joined": len(h["ingest→POST"])})
        if i == 0 or not h["ingest→POST"]:
            b.wait_idle(ids, quiet=quiet)  # the warm-up settles before the first measured run
            continue
        firsts.append(min(h["ingest→POST"]))
        lasts.append(max(h["ingest→POST"]))
        sim_lasts.append(max(h["sim→POST"]) if h["sim→POST"] else float("nan"))
        routed.append(max(h["ingest→routed"]))
        meter.start()
        b.wait_idle(ids, quiet=quiet)
        idle_cpu = meter.stop()
        marks = b.timeline(records)  # once settled: the journal has stamped every order
        for name, at_ms in marks.items():
            timelines[name].append(at_ms)
        by_run.append({name: round(at_ms, 1) for name, at_ms in marks.items()})
        for name, cpu_s in sent_cpu.items():
            send_cpu[name] = send_cpu.get(name, 0.0) + cpu_s
            settle_cpu[name] = settle_cpu.get(name, 0.0) + idle_cpu.get(name, 0.0)
    n = max(1, len(lasts))
    return {"followers": followers, "runs": len(lasts), "quiet_between_runs": quiet, "incomplete_runs": incomplete,
            "runs_not_heard_on_rtds": unheard_runs,
            "subscribe_s": round(setup_s, 1),
            "cpu_ms_per_fanout_to_last_post": {k: round(v * 1e3 / n, 1) for k, v in send_cpu.items()},
            "cpu_ms_per_fanout_settling": {k: round(v * 1e3 / n, 1) for k, v in settle_cpu.items()},
            "last_post_ms_by_run": [round(v, 1) for v in lasts],
            "latency": {"ingest→first POST": summarize(firsts), "ingest→last POST": summarize(lasts),
                        "sim→last POST": summarize(sim_lasts), "ingest→routed": summarize(routed)},
            "timeline": {name: summarize(v) for name, v in timelines.items()}, "timeline_by_run": by_run,
            "target_last_ms": fanout_target_ms(followers), **b.load_summary()}


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
            "stages": {k: summarize(v) for k, v in b.stages(records).items()},
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


def start_pipeline(run_dir: Path, tuning: dict[str, str] | None = None) -> Pipeline:
    """The simulator and the stack with embedded storage under ``run_dir`` (``tuning`` over :data:`TUNING`)."""
    env = isolated_env()
    env.update(free_port_env())
    env.update({"TT_STACK_READY_TIMEOUT_S": "120"})
    lines: list[str] = []
    try:
        return Pipeline.start(run_dir, env=env, seed=None, tuning={**TUNING, **(tuning or {})}, out=lines.append)
    except PipelineError:
        print("\n".join(lines), flush=True)
        raise


def _show(title: str, result: dict[str, Any], target: float | None = None) -> None:
    extra = {k: v for k, v in result.items()
             if k not in ("latency", "load1_max", "load_at_end", "transport_floor_under_load", "copy_floor",
                          "target", "stages", "timeline", "timeline_by_run")}
    print(f"--- {title} (load1 max {result.get('load1_max')}) {extra}", flush=True)
    print_table(result["latency"], target)
    if result.get("stages"):
        print("where each POST's time went (every POST of the run; admitted: the executor prepared the order):")
        print_table(result["stages"])
    if result.get("timeline"):
        print("each fan-out's milestones, ms after ingest received the trade (admitted: the executor prepared "
              "the order):")
        print_table(result["timeline"])
    if result.get("timeline_by_run"):
        print("per run, ms (" + " / ".join(MILESTONES) + "):")
        for i, marks in enumerate(result["timeline_by_run"], 1):
            print(f"  run {i:2}: " + " / ".join(f"{marks.get(m, float('nan')):.1f}" for m in MILESTONES))
    copy = result.get("copy_floor")
    if copy:
        total = sum(v for k, v in result.get("cpu_ms_per_trade", {}).items() if k != "sim+bench")
        print("copy chain's transports alone (bench hops against the stack's Redis and PostgreSQL), one message every "
              + " / ".join(copy) + ": latency drawn p50 / p99 "
              + " ; ".join(f"{c['drawn_p50_ms']:.3f} / {c['drawn_p99_ms']:.3f} ms" for c in copy.values())
              + "; CPU per copy " + " / ".join(f"{c['cpu_ms_per_copy']:.3f}" for c in copy.values())
              + f" ms (measured above: {total:.3f} ms a copy over the services, PostgreSQL and Redis)", flush=True)
    floor = result.get("transport_floor_under_load")
    if floor:
        gaps = list(floor)
        print("transport floor under this load (bare hops between idle processes, one message every "
              + " / ".join(gaps) + "), p50 / p99 ms:")
        for label in floor[gaps[0]]["hops"]:
            cells = [floor[g]["hops"][label] for g in gaps]
            print(f"  {label:44}" + "".join(f"{c['p50_ms']:>9.3f} / {c['p99_ms']:<7.3f}" for c in cells))
        for name, key in (("whole chain, drawn totals", "chain"),
                          ("required hops alone (no locked/book read)", "required_chain")):
            if all(floor[g].get(key) for g in gaps):
                print(f"  {name:44}" + "".join(
                    f"{floor[g][key]['drawn_p50_ms']:>9.3f} / {floor[g][key]['drawn_p99_ms']:<7.3f}" for g in gaps),
                    flush=True)
    target = result.get("target")
    if target:
        print(f"target: hot ingest→SELL POST p99 {target['p99_ms']:.2f} ms ≤ 2 × the required hops' p99 at "
              f"{target['spacing']} spacing ({target['floor_p99_ms']:.2f} ms) = {target['limit_p99_ms']:.2f} ms: "
              + ("met" if target["met"] else "OVER"), flush=True)
    if "cpu_us_per_tick_total" in result:
        alone = result.get("background_alone") or {}
        print("CPU per background tick, every process but the load generator (bench+sim): "
              f"{result['cpu_us_per_tick_total']} µs in the measurement window (with its crossings' fires), "
              f"{alone.get('cpu_us_per_tick_total', 'n/a')} µs with the background ticks alone "
              f"{alone.get('cpu_us_per_tick', {})}", flush=True)
        if result.get("cpu_ms_per_fire"):
            print(f"of which the crossings' fires, per fire: {result['cpu_ms_per_fire']['total']} ms of CPU "
                  f"{result['cpu_ms_per_fire']}", flush=True)


def main(argv: list[str]) -> int:
    """Run the scenarios; print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench pipeline")
    parser.add_argument("--quick", action="store_true", help="short durations (seconds, not minutes)")
    parser.add_argument("--only", default="a,b,c,e,f", help="scenarios among a,b,c,e,f,g (g only when asked)")
    parser.add_argument("--triggers", type=int, default=100_000, help="armed triggers for (e)")
    parser.add_argument("--assets", type=int, default=5_000, help="assets of those triggers for (e)")
    parser.add_argument("--hot", type=int, default=500,
                        help="measured crossings for (e), one at a time (p99 is the 5th worst of 500)")
    parser.add_argument("--rate-a", type=float, default=200.0, help="leader trades/s for (a)")
    parser.add_argument("--stall-s", type=float, default=10.0,
                        help="how long (f) stops the executor (the backlog is this x 1,000 orders)")
    parser.add_argument("--followers", type=int, default=1000, help="fan-out size for (b)")
    parser.add_argument("--quiet-runs", action="store_true",
                        help="(b): start each run once the stack's CPU use from the previous one died down")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--keep-logs", default="", metavar="DIR",
                        help="copy the stack's service logs into DIR when the run ends")
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
        "g": lambda b: scenario_g(b, step_s=5.0 if args.quick else 20.0),
        "f": lambda b: scenario_f(b, duration_s=8.0 if args.quick else max(40.0, args.stall_s + 30.0),
                                  stall_at_s=2.0 if args.quick else 10.0, stall_s=2.0 if args.quick else args.stall_s),
    }
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        started = time.monotonic()
        p = start_pipeline(Path(tmp) / "run")
        print(f"stack up in {time.monotonic() - started:.1f}s (run folder {p.run_dir})", flush=True)
        try:
            b = Bench(p)
            for key in ("a", "b", "c", "e", "f", "g"):
                if key in only:
                    with no_full_collections():
                        results[key] = steps[key](b)
                    if key == "f":
                        f = results[key]
                        print(f"--- (f) executor stopped under load: {f}", flush=True)
                        once = f["posts"] == f["orders_expected"] and not f["posted_twice"]
                        print(f"(f) every order POSTed once: {f['posts'] - f['posted_twice']} of "
                              f"{f['orders_expected']} ({f['refused_stale']} refused as too old), "
                              f"{f['posted_twice']} twice: " + ("ok" if once else "FAILED"), flush=True)
                        continue
                    if key == "g":
                        print(f"--- (g) throughput ceiling: {results[key]['ceiling_trades_per_s']:g} trades/s x 10 "
                              f"followers ({results[key]['target']})", flush=True)
                        continue
                    _show({"a": f"(a) 1 follower, {args.rate_a:g} trades/s", "b": "(b) fan-out, per run",
                           "c": "(c) 100 trades/s x 10 followers",
                           "e": "(e) guard: price tick → SELL POST"}[key], results[key],
                          float(results[key]["target_last_ms"]) if key == "b" else {"a": 8.0, "c": 25.0}.get(key))
            results["rss_mb"] = rss(p)
            print(f"--- (d) VmRSS MB: {results['rss_mb']} (target ≤ {RSS_TARGET_MB:g} each)", flush=True)
            results["restarts"] = {n: p.program(n).get("restarts") for n in ("ingest", "router", "executor")}
        finally:
            p.stop(quiet=True)
            if args.keep_logs:
                shutil.copytree(Path(tmp) / "run" / "logs", Path(args.keep_logs), dirs_exist_ok=True)
    if not args.no_save:
        # the whole run is the baseline; so is (b) alone at 10,000 followers or more: the wide fan-out's own
        if not args.quick and only == {"b"} and args.followers >= 10_000:
            path = save_results("pipeline_fanout", results)
        elif not args.quick and only == {"g"}:
            path = save_results("pipeline_ceiling", results)
        else:
            path = save_results("pipeline", results, baseline=not args.quick and only == set("abcef"))
        print(f"saved {path}", flush=True)
    return 0
