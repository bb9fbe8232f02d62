"""``python -m bench soak [--minutes 36] [--rate 20] [--leaders 10] [--followers 10] [--step-s 60] [--quick]
[--no-save]``: the whole stack under a steady copy load for a long while. Does anything grow that should not?

The stack runs as ``bench pipeline`` runs it (production tuning, embedded PostgreSQL and Redis). ``--leaders``
leaders with ``--followers`` LIVE followers each trade ``--rate`` times a second in all, for ``--minutes``; each
follower's fills arm and resize its position's take-profit and stop-loss (:data:`EXITS`) at guard. Every
``--step-s`` the run samples each service's resident memory, Redis's memory, keys and stream entries, PostgreSQL's
database size and the executor's two work tables that must stay small (``order_pending``: orders not yet ended or
released; ``order_events_outbox``: events not yet appended to the stream).

A steady state needs time: the streams keep every entry 15 minutes (``stream_keep_s``) and ingest remembers fill
identities for 15 minutes, so memory rises for that long by design. Growth is therefore measured over the steady
part only, from :data:`STEADY_AFTER_S` on: each service's RSS as a slope in MB an hour (target: under
:data:`LEAK_MB_PER_H`; a leak of that size would take a service from 100 MB to its 250-MB target in a day and a
half), each log's oldest entry (a log its readers registered for must keep no more than its 15 minutes and a trim
round: :data:`LOG_KEPT_MAX_S`), and what Redis and PostgreSQL keep per order copied (dedupe claims kept for days,
the order history). The copies' latency is reported per window (``--window-min``), so a drift shows; every copy
must be POSTed exactly once.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import redis as redis_sync

from bench import address, memory_mb, save_results, summarize
from bench._pipeline_harness import RSS_TARGET_MB, Bench, no_full_collections
from bench.pipeline import start_pipeline
from common.logtrim import readers_key

SERVICES = ("control", "ingest", "router", "executor", "guard", "envoy")
STEADY_AFTER_S = 960.0  # past the 15-minute horizons above, with a minute to spare
LEAK_MB_PER_H = 10.0
LOG_KEPT_MAX_S = 1000.0  # a log read by registered readers keeps 900 s (stream_keep_s), trimmed every 30 s
# every fill arms (or resizes) its position's take-profit and stop-loss at guard; the books never reach them
EXITS = {"takeProfitPct": "40", "stopLossPct": "25"}


def slope_per_h(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, in value an hour; None without two distinct times."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600.0


def steady(samples: Sequence[dict[str, Any]], since_s: float) -> list[dict[str, Any]]:
    """The samples taken from ``since_s`` on (the steady part); all of them when fewer than three are that late."""
    late = [s for s in samples if s["t"] >= since_s]
    return late if len(late) >= 3 else list(samples)


def growth(samples: Sequence[dict[str, Any]], since_s: float) -> dict[str, Any]:
    """Each service's RSS over the steady part: first, last, peak (MB) and slope (MB an hour), with a verdict."""
    part = steady(samples, since_s)
    out: dict[str, Any] = {}
    for name in SERVICES:
        points = [(float(s["t"]), float(s["rss_mb"][name])) for s in part if name in s["rss_mb"]]
        if not points:
            continue
        slope = slope_per_h(points)
        peak = max(float(s["rss_mb"].get(name, 0.0)) for s in samples)
        out[name] = {"first_mb": points[0][1], "last_mb": points[-1][1], "peak_mb": round(peak, 1),
                     "slope_mb_per_h": None if slope is None else round(slope, 1),
                     "holds": peak <= RSS_TARGET_MB and (slope is None or slope <= LEAK_MB_PER_H)}
    return out


def logs_held(samples: Sequence[dict[str, Any]], since_s: float) -> dict[str, Any]:
    """Each log's oldest entry over the steady part: a log with registered readers holds when it never kept more
    than :data:`LOG_KEPT_MAX_S` (its keep, plus a trim round and a partly old stream node)."""
    part = steady(samples, since_s)
    out: dict[str, Any] = {}
    for name in sorted({n for s in part for n in s.get("streams", {})}):
        seen = [s["streams"][name] for s in part if name in s.get("streams", {})]
        oldest = max(v["oldest_s"] for v in seen)
        trimmed = any(v["readers"] for v in seen)
        out[name] = {"oldest_s_max": oldest, "entries_last": seen[-1]["entries"],
                     "entries_max": max(v["entries"] for v in seen), "trimmed_by_age": trimmed,
                     "holds": not trimmed or oldest <= LOG_KEPT_MAX_S}
    return out


def per_order(samples: Sequence[dict[str, Any]], since_s: float, key: str) -> float | None:
    """Bytes of ``key`` (a size in MB in each sample) gained per order POSTed over the steady part."""
    part = steady(samples, since_s)
    first, last = part[0], part[-1]
    orders = last["posts"] - first["posts"]
    if orders <= 0:
        return None
    return round((last[key] - first[key]) * 2**20 / orders, 1)


def sample(b: Bench, r: redis_sync.Redis, db_url: str, pids: dict[str, int], t: float) -> dict[str, Any]:
    """One reading of every service's memory and of what Redis and PostgreSQL hold."""
    rss = {name: round(memory_mb(pid).get("VmRSS", 0.0), 1) for name, pid in pids.items() if pid}
    info: dict[str, Any] = r.info("memory")
    streams = {}
    for key in sorted(k.decode() for k in r.scan_iter(_type="stream")):
        first: Any = r.xrange(key, count=1)
        oldest_s = (time.time_ns() // 1_000_000 - int(bytes(first[0][0]).split(b"-")[0])) / 1000 if first else 0.0
        streams[key.rsplit(":", 1)[-1]] = {"entries": int(r.xlen(key)), "oldest_s": round(oldest_s, 1),
                                           "readers": int(r.hlen(readers_key(key)))}
    with psycopg.connect(db_url, autocommit=True) as conn:
        db_bytes, pending, outbox, armed = conn.execute(
            "SELECT pg_database_size(current_database()), (SELECT count(*) FROM order_pending),"
            " (SELECT count(*) FROM order_events_outbox), (SELECT count(*) FROM triggers WHERE state = 'ARMED')"
        ).fetchone() or (0, 0, 0, 0)
    return {"t": round(t, 1), "posts": b.post_count(), "rss_mb": rss,
            "redis_mb": round(int(info["used_memory"]) / 2**20, 1), "redis_keys": int(r.dbsize()),
            "stream_entries": sum(v["entries"] for v in streams.values()), "streams": streams,
            "postgres_mb": round(int(db_bytes) / 2**20, 1),
            "order_pending": int(pending), "outbox": int(outbox), "armed_triggers": int(armed)}


def windows(b: Bench, records: list[Any], start_ns: int, window_s: float) -> list[dict[str, Any]]:
    """ingest → POST of the copies whose trade ingest received in each window of ``window_s`` from ``start_ns``."""
    b.read_orders()
    buckets: dict[int, list[Any]] = {}
    for rec in records:
        order = b.orders.get(rec.client_order_id)
        if order is not None and order.received_time_ns >= start_ns:
            buckets.setdefault(int((order.received_time_ns - start_ns) / 1e9 // window_s), []).append(rec)
    out = []
    for i in sorted(buckets):
        s = summarize(b.hops(buckets[i])["ingest→POST"])
        out.append({"from_min": round(i * window_s / 60, 1), "n": s["n"], "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"]})
    return out


def soak(b: Bench, *, minutes: float, rate: float, leaders: int, followers: int, step_s: float,
         window_min: float, steady_after_s: float = STEADY_AFTER_S) -> dict[str, Any]:
    """Drive the load for ``minutes`` while sampling every ``step_s``; the figures of the run."""
    names = [address() for _ in range(leaders)]
    plan = [(leader, b.market()) for leader in names]
    wallets = {w for ws in b.subscribe(names, followers, exits=EXITS).values() for w in ws}
    b.wait_followed(names)
    p = b.p
    db_url = (p.run_dir / "database_url").read_text().strip()
    r = redis_sync.Redis.from_url((p.run_dir / "redis_url").read_text().strip())
    pids = {n: int(_program(p, n).get("pid") or 0) for n in SERVICES}
    restarts0 = {n: _program(p, n).get("restarts") or 0 for n in SERVICES}
    sent: dict[str, int] = {}
    start_ns, t0 = time.time_ns(), time.monotonic()
    driver = threading.Thread(target=lambda: sent.update(n=b.drive(rate, minutes * 60, plan)), daemon=True)
    driver.start()
    samples: list[dict[str, Any]] = []
    try:
        while driver.is_alive():
            samples.append(sample(b, r, db_url, pids, time.monotonic() - t0))
            s = samples[-1]
            print(f"soak t={s['t']:.0f}s posts={s['posts']} rss={s['rss_mb']} redis={s['redis_mb']} MB "
                  f"keys={s['redis_keys']} entries={s['stream_entries']} pg={s['postgres_mb']} MB "
                  f"pending={s['order_pending']} outbox={s['outbox']} armed={s['armed_triggers']}", flush=True)
            b.read_orders()  # the routed log keeps 15 minutes: read the Orders before they are trimmed
            driver.join(step_s)
        trades = sent.get("n", 0)
        records = b.wait_posts(wallets, trades * followers, 240)
        samples.append(sample(b, r, db_url, pids, time.monotonic() - t0))
    finally:
        r.close()
    ids = [rec.client_order_id for rec in records]
    restarts = {n: (_program(p, n).get("restarts") or 0) - restarts0[n] for n in SERVICES if pids[n]}
    return {"minutes": minutes, "rate_per_s": rate, "leaders": leaders, "followers_per_leader": followers,
            "trades": trades, "posts_expected": trades * followers, "posts": len(set(ids)),
            "posted_twice": len(ids) - len(set(ids)), "restarts": restarts, "steady_after_s": steady_after_s,
            "rss": growth(samples, steady_after_s), "logs": logs_held(samples, steady_after_s),
            "redis_bytes_per_order": per_order(samples, steady_after_s, "redis_mb"),
            "postgres_bytes_per_order": per_order(samples, steady_after_s, "postgres_mb"),
            "armed_triggers": samples[-1]["armed_triggers"],
            "work_tables_max": {"order_pending": max(s["order_pending"] for s in samples),
                                "outbox": max(s["outbox"] for s in samples)},
            "latency_by_window": windows(b, records, start_ns, window_min * 60),
            "latency": {"ingest→POST": summarize(b.hops(records)["ingest→POST"])},
            "samples": samples}


def _program(p: Any, name: str) -> dict[str, Any]:
    """The supervisor's record of program ``name`` (empty when the stack has none by that name)."""
    try:
        return dict(p.program(name))
    except KeyError:
        return {}


def report(res: dict[str, Any], *, judge_growth: bool = True) -> bool:
    """Print the run's figures; True when every copy was POSTed once and (``judge_growth``) no service grew."""
    once = res["posts"] == res["posts_expected"] and res["posted_twice"] == 0
    print(f"--- soak: {res['minutes']:g} min, {res['rate_per_s']:g} trades/s x {res['followers_per_leader']} "
          f"followers; {res['posts']} of {res['posts_expected']} copies POSTed, {res['posted_twice']} twice: "
          + ("ok" if once else "FAILED"), flush=True)
    print(f"service restarts: {res['restarts']}", flush=True)
    print(f"RSS from {res['steady_after_s']:.0f} s on (target: peak ≤ {RSS_TARGET_MB:g} MB, slope ≤ "
          f"{LEAK_MB_PER_H:g} MB/h):", flush=True)
    for name, g in res["rss"].items():
        print(f"  {name:<9} {g['first_mb']:>7} → {g['last_mb']:>7} MB, peak {g['peak_mb']:>7}, "
              f"{g['slope_mb_per_h']} MB/h: " + ("ok" if g["holds"] else "OVER"), flush=True)
    print(f"logs from {res['steady_after_s']:.0f} s on (target: a log trimmed by age keeps ≤ {LOG_KEPT_MAX_S:g} s):",
          flush=True)
    for name, g in res["logs"].items():
        print(f"  {name:<15} oldest entry at most {g['oldest_s_max']:>7} s, entries {g['entries_last']} (at most "
              f"{g['entries_max']}): " + (("ok" if g["holds"] else "OVER") if g["trimmed_by_age"] else
                                          "capped by length only"), flush=True)
    print(f"kept per order over the steady part: Redis {res['redis_bytes_per_order']} B, PostgreSQL "
          f"{res['postgres_bytes_per_order']} B; work tables at most {res['work_tables_max']}", flush=True)
    for w in res["latency_by_window"]:
        print(f"  from {w['from_min']:>5} min: n={w['n']} p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms", flush=True)
    held = all(g["holds"] for g in res["rss"].values()) and all(g["holds"] for g in res["logs"].values())
    return once and (not judge_growth or held)


def main(argv: list[str]) -> int:
    """Run the soak; print and save its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--minutes", type=float, default=36.0, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=20.0, help="leader trades a second, over all leaders")
    parser.add_argument("--leaders", type=int, default=10)
    parser.add_argument("--followers", type=int, default=10, help="LIVE followers per leader")
    parser.add_argument("--step-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--window-min", type=float, default=6.0, help="minutes per latency window")
    parser.add_argument("--quick", action="store_true", help="two minutes, the steady part from the first")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    minutes, step_s, window_min = (2.0, 10.0, 0.5) if args.quick else (args.minutes, args.step_s, args.window_min)
    steady_after_s = 30.0 if args.quick else STEADY_AFTER_S
    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        p = start_pipeline(Path(tmp) / "run")
        try:
            with no_full_collections():
                res = soak(Bench(p), minutes=minutes, rate=args.rate, leaders=args.leaders, followers=args.followers,
                           step_s=step_s, window_min=window_min, steady_after_s=steady_after_s)
        finally:
            p.stop(quiet=True)
    ok = report(res, judge_growth=not args.quick)  # two minutes are all warm-up
    if not args.no_save:
        print(f"saved {save_results('soak', {'quick': args.quick, **res}, baseline=not args.quick)}", flush=True)
    return 0 if ok else 1
