"""(g) of ``bench pipeline``: the throughput ceiling, the highest leader-trade rate the stack sustains.

``leaders`` followed leaders with ``followers`` LIVE followers each take leader trades round robin at a rising
rate, ``step_s`` seconds per step. A step holds when ingest → POST stays at p99 ≤ ``p99_target_ms`` and no
backlog grows: the last quarter's p50 is within ``growth`` of the first quarter's (or under 10 ms), and every
order of the step reached the Insiders fake within 2 s of the step's last trade. The ceiling is the highest
step that holds below the first one that does not; one more step is tried after a failure, so a single noisy
step does not end the search early.
"""

from __future__ import annotations

import time
from typing import Any

from bench import address, summarize
from bench._pipeline_harness import Bench

RATES = (25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 200.0)


def _step(b: Bench, rate: float, step_s: float, plan: list[tuple[str, Any]], wallets: set[str], followers: int,
          p99_target_ms: float, growth: float) -> dict[str, Any]:
    since = b.post_count()
    t0 = time.time_ns()
    sent = b.drive(rate, step_s, plan)
    sent_end = time.time_ns()
    records = b.wait_posts(wallets, sent * followers, 120, since)
    b.read_orders()
    rows: list[tuple[int, float, int]] = []  # (received at, ingest → POST ms, POST arrival)
    for r in records:
        o = b.orders.get(r.client_order_id)
        if o is not None and o.received_time_ns >= t0:
            rows.append((o.received_time_ns, (r.arrival_ns - o.received_time_ns) / 1e6, r.arrival_ns))
    rows.sort()
    latencies = [lat for _, lat, _ in rows]
    quarter = max(1, len(rows) // 4)
    first = summarize([lat for _, lat, _ in rows[:quarter]])
    last = summarize([lat for _, lat, _ in rows[-quarter:]])
    whole = summarize(latencies)
    drained_ms = (max(a for _, _, a in rows) - sent_end) / 1e6 if rows else float("inf")
    complete = len(rows) >= sent * followers
    growing = last["p50_ms"] > max(10.0, growth * first["p50_ms"])
    holds = complete and whole["p99_ms"] <= p99_target_ms and not growing and drained_ms <= 2000.0
    return {"rate_per_s": rate, "orders_per_s": rate * followers, "trades": sent, "posts": len(rows),
            "latency": whole, "first_quarter_p50_ms": first["p50_ms"], "last_quarter_p50_ms": last["p50_ms"],
            "drained_after_last_trade_ms": round(drained_ms, 1), "backlog_growing": growing, "holds": holds}


def scenario_g(b: Bench, *, leaders: int = 10, followers: int = 10, step_s: float = 20.0,
               rates: tuple[float, ...] = RATES, p99_target_ms: float = 50.0, growth: float = 2.0) -> dict[str, Any]:
    """Step the leader-trade rate up until the stack no longer holds it; report every step and the ceiling."""
    names = [address() for _ in range(leaders)]
    plan = [(leader, b.market()) for leader in names]
    wallets = {w for ws in b.subscribe(names, followers).values() for w in ws}
    b.wait_followed(names)
    warm = b.drive(rates[0], 2.0, plan)
    b.wait_posts(wallets, warm * followers, 30)
    steps: list[dict[str, Any]] = []
    failures = 0
    for rate in rates:
        step = _step(b, rate, step_s, plan, wallets, followers, p99_target_ms, growth)
        steps.append(step)
        print(f"    {rate:g} trades/s x {followers}: p99 {step['latency']['p99_ms']:.1f} ms, quarters p50 "
              f"{step['first_quarter_p50_ms']:.1f} → {step['last_quarter_p50_ms']:.1f} ms, drained "
              f"{step['drained_after_last_trade_ms']:.0f} ms after the last trade: "
              f"{'holds' if step['holds'] else 'does not hold'}", flush=True)
        failures = 0 if step["holds"] else failures + 1
        if failures == 2:
            break
        time.sleep(3.0)  # the step's settling (fills, journal) is not the next step's load
    ceiling = 0.0
    for step in steps:
        if not step["holds"]:
            break
        ceiling = step["rate_per_s"]
    return {"leaders": leaders, "followers_per_leader": followers, "step_s": step_s, "steps": steps,
            "ceiling_trades_per_s": ceiling, "ceiling_orders_per_s": ceiling * followers,
            "target": f"p99 ingest → POST ≤ {p99_target_ms:g} ms, no growing backlog", **b.load_summary()}
