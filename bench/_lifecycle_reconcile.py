"""(reconcile) of ``bench lifecycle``: scenario (a) with and without 1,000 LIVE wallets reconciled beside it.

A 60-s phase's p99 on a 2-vCPU cloud machine swings by tens of per cent whatever the phase holds, so phases
taken one after the other compare the machine's moments as much as the reconciliation. Here one long drive of
scenario (a) (one follower, 200 leader trades/s) runs while the wallets switch between PAPER and LIVE every
``block_s`` seconds (the executor reads the LIVE wallets every second in this run,
``TT_TUNE_EXECUTOR_RECONCILE_REFRESH_S=1``), and each copy counts for the phase its leader trade was received
in; the first ``settle_s`` of every block, while the switch takes effect, count for neither. Both phases so
sample the same stretch of the machine's life, and their pooled p99s are compared: target within 10 %.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import orjson
import psycopg

from bench import address, summarize
from bench._pipeline_harness import Bench
from bench.pipeline import warmed_follower

BOOKED = """
INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd, id, state,
                       origin, subscription_id, venue, outcome, opened_at, updated_at)
SELECT r.w, r.a, r.c, r.p, r.s, r.avg, r.s * r.avg, 'pos_' || md5(r.w || r.a), 'OPEN', 'COPY', r.sub, 'INSIDERS',
       r.o, now() - interval '1 hour', now() - interval '1 hour'
FROM json_to_recordset(%s::json) AS r(w text, a text, c text, p text, s numeric, avg numeric, sub text, o text)
"""

PHASES = ("alone", "beside")


def database_url(p: Any) -> str:
    """The stack's PostgreSQL URL."""
    return (p.run_dir / "database_url").read_text().strip()


def _reconciled_wallets(b: Bench, n: int) -> list[str]:
    """``n`` PAPER wallets (subscribed through REST) with three positions each, booked and at the venue."""
    p = b.p
    markets = [b.market() for _ in range(3)]
    leader = address()
    wallets = b.subscribe([leader], n, mode="EXECUTION_MODE_PAPER")[leader]
    rows = [{"w": w, "a": m.tokens[0], "c": m.condition_id, "p": address(), "s": "50", "avg": "0.5", "sub": "",
             "o": "Yes"} for w in wallets for m in markets]
    with psycopg.connect(database_url(p), autocommit=True) as conn:
        conn.execute(BOOKED, (orjson.dumps(rows).decode(),))

    def hold() -> None:
        for r in rows:
            p.sim.insiders.positions.setdefault(r["w"], {})[r["a"]] = [Decimal(50), Decimal(25)]

    p.sim.call(hold)
    return wallets


def _set_mode(conn: psycopg.Connection[Any], wallets: list[str], mode: str) -> None:
    """The wallets' subscriptions become ``mode``: everything else they cost the stack (guard's performance passes
    over their subscriptions) is there in both phases and only their reconciliation differs."""
    conn.execute("UPDATE subscriptions SET mode = %s WHERE follower_wallet_id = ANY(%s)", (mode, wallets))


def _reconciled_since(conn: psycopg.Connection[Any], since_s: float) -> int:
    row = conn.execute("SELECT count(DISTINCT follower_wallet_id) FROM positions"
                       " WHERE reconciled_at > now() - make_interval(secs => %s)", (since_s,)).fetchone()
    return int(row[0]) if row else 0


def scenario_reconcile(b: Bench, wallets: int, rate: float, duration_s: float, warmup_s: float, *,
                       block_s: float = 10.0, settle_s: float = 2.0) -> dict[str, Any]:
    """Scenario (a) for ``duration_s`` while ``wallets`` wallets switch PAPER / LIVE every ``block_s``."""
    ids = _reconciled_wallets(b, wallets)
    leader, market, followers, warm, skip = warmed_follower(b, rate, warmup_s)
    switches: list[tuple[int, str]] = []  # (wall ns, phase from then on)
    cpu = {phase: dict[str, float]() for phase in PHASES}
    reconciled = {phase: 0 for phase in PHASES}
    done = threading.Event()

    def switcher() -> None:
        with psycopg.connect(database_url(b.p), autocommit=True) as conn:
            i = 0
            while not done.is_set():
                phase = PHASES[i % 2]
                _set_mode(conn, ids, "LIVE" if phase == "beside" else "PAPER")
                switches.append((time.time_ns(), phase))
                meter = b.cpu_meter()
                meter.start()
                done.wait(block_s)
                for name, seconds in meter.stop().items():
                    cpu[phase][name] = cpu[phase].get(name, 0.0) + seconds
                reconciled[phase] += _reconciled_since(conn, block_s)
                i += 1
            _set_mode(conn, ids, "PAPER")

    thread = threading.Thread(target=switcher, name="reconcile-switcher", daemon=True)
    thread.start()
    sent = b.drive(rate, duration_s, [(leader, market)])
    done.set()
    thread.join()
    records = [r for r in b.wait_posts(followers, warm + sent, 240) if r.client_order_id not in skip]
    b.read_orders()
    samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    trades = {phase: 0 for phase in PHASES}
    settle_ns = int(settle_s * 1e9)
    for r in records:
        o = b.orders.get(r.client_order_id)
        if o is None or not o.received_time_ns:
            continue
        at = o.received_time_ns
        current = [(t, phase) for t, phase in switches if t <= at]
        if not current:
            continue
        trades[current[-1][1]] += 1
        if at - current[-1][0] >= settle_ns:
            samples[current[-1][1]].append((r.arrival_ns - at) / 1e6)
    pooled = {phase: summarize(v) for phase, v in samples.items()}
    counted = {phase: sum(1 for _, p in switches if p == phase) for phase in PHASES}
    alone, beside = pooled["alone"]["p99_ms"], pooled["beside"]["p99_ms"]
    return {"reconcile_wallets": wallets, "duration_s": duration_s, "block_s": block_s, "settle_s": settle_s,
            "blocks": counted, "trades": sent, "posts": len(records),
            "wallets_reconciled": reconciled, "latency": {f"ingest→POST {p}": pooled[p] for p in PHASES},
            "p50_ms": {p: pooled[p]["p50_ms"] for p in PHASES}, "p99_ms": {"alone": alone, "beside": beside},
            "p99_ratio": round(beside / alone, 3) if alone else None,
            "cpu_ms_per_trade": {p: {k: round(v * 1e3 / max(1, trades[p]), 3) for k, v in cpu[p].items()}
                                 for p in PHASES},
            "target": "p99 within 10 % of the phase without reconciliation (blocks interleaved, samples pooled)",
            **b.load_summary()}
