"""What one hop of the copy path costs when the processes at both ends were idle in between.

``python -m bench hops [--gaps-ms 1,5,50] [--samples 1000] [--quick] [--chain copy|guard] [--out F] [--no-save]``

The copy path crosses the same transports for every leader trade: a websocket frame into ingest, a
Redis script (dedupe + append), a gRPC stream hop to the router, a PostgreSQL read beside a Redis
read, a Redis script (emit), a gRPC hop to the executor, a Redis read (the book), a PostgreSQL
insert with its commit (the intent), and the POST. On this machine a process that has slept for a
few milliseconds takes far longer to wake than one that was busy a moment ago, so at 200 trades/s
(a message every 5 ms) each hop costs several times its back-to-back figure.

Each transport is measured between separate processes on loopback, one message every ``gap``
(both ends sleep in between, as the pipeline's stages do between trades): one-way for raw TCP
(the websocket and HTTP hops are a TCP write each) and a grpc.aio server stream (read with the
``GRPC_EXPERIMENTS`` the services set, and with gRPC's default EventEngine client; the gRPC hops also
with the internal token sent and checked as between the services, ``*_auth``, which the chains sum), round trips for
Redis (``GET``), PostgreSQL (prepared ``SELECT 1``) and a PostgreSQL ``INSERT`` with its commit.
The sum of those hops along the copy path is the transport floor of *frame received → POST
received* at that spacing, before any of the services' own work; ``--chain guard`` sums a trigger
SELL's hops instead (tick log, locked read, SubmitOrder, book read, intent, POST: *tick received by
ingest → POST received*). Besides the sums of p50s and of p99s (an upper bound), the chain's total is
drawn 100,000 times from the hops' own samples, which gives percentiles to set against a target.
Results go to ``bench/results/hops.json``; ``(e)`` of ``bench pipeline`` runs the guard chain
beside its tick load (the floor under that load).

Each transport's CPU per message is measured too, at both ends: the side that starts it (a send's own CPU
time; a round trip's, from the call to its answer) and the other side (the receiving process over the
window, Redis' or the PostgreSQL backend's main thread). Summed along the copy chain (our processes' side of
each hop, and the POST's answer read back) that is the CPU a copy costs in transports alone at that spacing:
the floor of scenario (a)'s CPU per copy, whatever the services do on top.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import uvloop

from bench import save_results, summarize
from bench._hops_probes import ROOT, TRANSPORTS, Cpu, probe, server_pids
from common.fastredis import FastRedis

# The copy path's hops, in order, as (label, measured transport).
CHAIN = (
    ("RTDS frame → ingest", "tcp_one_way"),
    ("ingest: dedupe + append script", "redis_rtt"),
    ("ingest → router (gRPC stream)", "grpc_one_way_auth"),
    ("router: PostgreSQL read ∥ Redis read", "pg_rtt"),
    ("router: emit script", "redis_rtt"),
    ("router → executor (gRPC stream)", "grpc_one_way_auth"),
    ("executor: book read", "redis_rtt"),
    ("executor: intent INSERT + commit", "pg_insert_rtt"),
    ("executor → Insiders API (POST)", "tcp_one_way"),
)
# A trigger's SELL, from the tick received by ingest (the frame's own hop is not part of that figure).
GUARD_CHAIN = (
    ("ingest → guard (tick log append + read)", "redis_rtt"),
    ("guard: locked read", "pg_rtt"),
    ("guard → executor (SubmitOrder request)", "grpc_unary_one_way_auth"),
    ("executor: book read", "redis_rtt"),
    ("executor: intent INSERT + commit", "pg_insert_rtt"),
    ("executor → Insiders API (POST)", "tcp_one_way"),
)
# The part of that chain no design inside the contracts can drop: the tick's way from ingest to guard, the
# issue's SubmitOrder, the intent committed before the POST (docs/architecture.md) and the POST. Its floor says what
# is left of a target for guard's and the executor's own work (the locked read and the book read included).
GUARD_REQUIRED_CHAIN = tuple(hop for hop in GUARD_CHAIN if hop[0] not in ("guard: locked read", "executor: book read"))
CHAINS = {"copy": CHAIN, "guard": GUARD_CHAIN}
# The copy chain's CPU, on our processes' side of each hop: ``near`` the side that starts the hop (a sender, a
# caller), ``far`` the other, ``both`` both (Redis and PostgreSQL are ours; the venue and the Insiders API are
# not). The router reads PostgreSQL and Redis side by side: one latency, two hops of CPU; and the executor reads
# the POST's answer.
COPY_CPU_CHAIN = (
    ("RTDS frame → ingest (read)", "tcp_one_way", "far"),
    ("ingest: dedupe + append script", "redis_rtt", "both"),
    ("ingest → router (gRPC stream)", "grpc_one_way_auth", "both"),
    ("router: PostgreSQL read", "pg_rtt", "both"),
    ("router: Redis read", "redis_rtt", "both"),
    ("router: emit script", "redis_rtt", "both"),
    ("router → executor (gRPC stream)", "grpc_one_way_auth", "both"),
    ("executor: book read", "redis_rtt", "both"),
    ("executor: intent INSERT + commit", "pg_insert_rtt", "both"),
    ("executor → Insiders API (POST sent)", "tcp_one_way", "near"),
    ("Insiders API → executor (answer read)", "tcp_one_way", "far"),
)


async def measure(redis_url: str, db_url: str, tmp: Path, gaps_s: list[float], samples: int,
                  only: set[str] | None = None,
                  cpu: dict[str, dict[str, Cpu]] | None = None) -> dict[str, dict[str, list[float]]]:
    """Every transport (or those in ``only``) at every gap: ``{gap label: {transport: samples in ms}}``; each
    one's CPU per message goes in ``cpu`` (``{gap label: {transport: Cpu}}``) when given."""
    redis = FastRedis(redis_url)
    await redis.set("tt:bench:hops", "x")
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_hops (id bigserial PRIMARY KEY, v text NOT NULL)")
    pids = await server_pids(redis, conn)
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for gap_s in gaps_s:
            n = samples if gap_s < 0.02 else max(50, samples // 5)
            names = [t for t in TRANSPORTS if only is None or t in only]
            probed = {name: await probe(name, redis, conn, tmp, gap_s, n, pids) for name in names}
            runs = {name: samples_ for name, (samples_, _cpu) in probed.items()}
            out[f"{gap_s * 1000:g} ms"] = runs
            if cpu is not None:
                cpu[f"{gap_s * 1000:g} ms"] = {name: c for name, (_samples, c) in probed.items()}
            print(f"gap {gap_s * 1000:g} ms: " + ", ".join(
                f"{k} p50 {summarize(v)['p50_ms']:.3f}" for k, v in runs.items()), flush=True)
    finally:
        redis.close()
        with contextlib.suppress(psycopg.Error):  # the scratch table must not stay in a DATABASE_URL database
            await conn.execute("DROP TABLE IF EXISTS bench_hops")
        await conn.close()
    return out


def chains(results: dict[str, Any], chain: Sequence[tuple[str, str]] = CHAIN) -> dict[str, dict[str, float]]:
    """Sum of the chain's hop p50s (and p99s: an upper bound) at each gap."""
    return {gap: {"p50_sum_ms": round(sum(hops[t]["p50_ms"] for _, t in chain), 3),
                  "p99_sum_ms": round(sum(hops[t]["p99_ms"] for _, t in chain), 3)}
            for gap, hops in results.items()}


def chain_draws(samples: Mapping[str, Sequence[float]], chain: Sequence[tuple[str, str]], rng: random.Random,
                draws: int = 100_000) -> list[float]:
    """Totals of the chain's hops, each hop drawn from its own measured samples (hops taken as independent):
    the distribution of the whole chain's transport floor, whose percentiles (unlike a sum of p99s) can be
    set against a target's."""
    pools = [samples[transport] for _label, transport in chain]
    if any(not pool for pool in pools):
        raise ValueError("every hop of the chain needs samples")
    return [sum(rng.choice(pool) for pool in pools) for _ in range(draws)]


def cpu_floor_us(cpu: Mapping[str, Cpu], chain: Sequence[tuple[str, str, str]] = COPY_CPU_CHAIN) -> float:
    """CPU microseconds per copy of the chain's hops at one gap, our side of each (see ``COPY_CPU_CHAIN``)."""
    total = 0.0
    for _label, transport, side in chain:
        c = cpu[transport]
        total += {"near": c.near_us, "far": c.far_us, "both": c.near_us + c.far_us}[side]
    return round(total, 1)


def _show_cpu(cpu: dict[str, dict[str, Cpu]]) -> dict[str, float]:
    """Print each transport's CPU per message and the copy chain's sum; returns the sums per gap."""
    gaps = list(cpu)
    print(f"{'CPU per message, µs':40}" + "".join(f"{'gap ' + g:>22}" for g in gaps))
    print(f"{'':40}" + "".join(f"{'start / other end':>22}" for _ in gaps))
    for t in cpu[gaps[0]]:
        print(f"{t:40}" + "".join(f"{cpu[g][t].near_us:>13.1f} / {cpu[g][t].far_us:<6.1f}" for g in gaps))
    floors_us = {g: cpu_floor_us(cpu[g]) for g in gaps if all(t in cpu[g] for _l, t, _s in COPY_CPU_CHAIN)}
    if floors_us:
        print(f"{'copy chain, our side (CPU per copy)':40}" + "".join(f"{floors_us[g]:>19.1f} µs" for g in floors_us))
    return floors_us


def _show(results: dict[str, Any], chain: Sequence[tuple[str, str]] = CHAIN) -> None:
    gaps = list(results)
    print(f"{'hop':40}" + "".join(f"{'gap ' + g:>22}" for g in gaps))
    print(f"{'':40}" + "".join(f"{'p50 / p99 ms':>22}" for _ in gaps))
    for label, t in chain:
        print(f"{label:40}" + "".join(f"{results[g][t]['p50_ms']:>13.3f} / {results[g][t]['p99_ms']:<6.3f}"
                                      for g in gaps))
    for extra, label in (("grpc_one_way", "(gRPC stream hop, no token)"),
                         ("grpc_one_way_event_engine_client", "(gRPC stream hop, grpc default client)"),
                         ("grpc_unary_one_way", "(gRPC unary request leg, no token)")):
        if any(extra not in results[g] for g in gaps):
            continue
        print(f"{label:40}" + "".join(
            f"{results[g][extra]['p50_ms']:>13.3f} / {results[g][extra]['p99_ms']:<6.3f}" for g in gaps))
    sums = chains(results, chain)
    print(f"{'transport floor (sum of p50s / p99s)':40}" + "".join(
        f"{sums[g]['p50_sum_ms']:>13.3f} / {sums[g]['p99_sum_ms']:<6.3f}" for g in gaps))


def floors(raw: dict[str, dict[str, list[float]]], chain: Sequence[tuple[str, str]],
           rng: random.Random) -> dict[str, dict[str, float]]:
    """The chain's transport floor at each gap: sums of the hop p50s / p99s, and percentiles of drawn totals."""
    summaries = {gap: {k: summarize(v) for k, v in runs.items()} for gap, runs in raw.items()}
    sums = chains(summaries, chain)
    out: dict[str, dict[str, float]] = {}
    for gap, runs in raw.items():
        drawn = summarize(chain_draws(runs, chain, rng))
        out[gap] = {**sums[gap], "drawn_p50_ms": drawn["p50_ms"], "drawn_p99_ms": drawn["p99_ms"],
                    "drawn_p99_9_ms": drawn["p99_9_ms"]}
    return out


def run_against(redis_url: str, db_url: str, *, chain: str, gaps_ms: str, samples: int) -> dict[str, Any] | None:
    """``bench hops`` in a process of its own against this Redis and PostgreSQL (a running stack's): its report
    (``--out``), or None when it failed (said on stdout: a missing floor is reported, not fatal)."""
    with tempfile.TemporaryDirectory(prefix="tt-bench-floor-") as tmp:
        out = Path(tmp) / "floor.json"
        env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": db_url}
        done = subprocess.run([sys.executable, "-m", "bench", "hops", "--gaps-ms", gaps_ms, "--samples", str(samples),
                               "--chain", chain, "--no-save", "--out", str(out)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600, check=False)
        if done.returncode != 0 or not out.exists():
            print(f"transport floor not measured: {done.stderr.decode(errors='replace')[-500:]}", flush=True)
            return None
        report: dict[str, Any] = json.loads(out.read_text())
        return report


def main(argv: list[str]) -> int:
    """Measure the hops, print the table, save the results."""
    parser = argparse.ArgumentParser(prog="bench hops", description=__doc__.splitlines()[0])
    parser.add_argument("--gaps-ms", default="1,5,50", help="comma-separated idle times between messages")
    parser.add_argument("--samples", type=int, default=1000, help="per transport and gap (a fifth at gaps ≥ 20 ms)")
    parser.add_argument("--quick", action="store_true", help="200 samples")
    parser.add_argument("--chain", choices=sorted(CHAINS), default="copy",
                        help="the path whose floor is summed: a copy (frame → POST) or a trigger SELL (ingest → POST)")
    parser.add_argument("--out", default="", help="also write the results as JSON to this file")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    gaps_s = [float(g) / 1000 for g in args.gaps_ms.split(",") if g.strip()]
    samples = 200 if args.quick else args.samples
    chain = CHAINS[args.chain]

    from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-hops-"))
    redis_url, redis_pid = os.environ.get("REDIS_URL", ""), 0
    if not redis_url:
        redis_url, redis_pid = start_redis(tmp / "redis", durable=False)
    own_pg = not os.environ.get("DATABASE_URL")
    db_url = os.environ.get("DATABASE_URL", "") or start_postgres(tmp / "pg")
    try:
        # the copy chain shows every transport; the guard chain its own and its unary leg without the token
        only = {t for _label, t in chain} | {"grpc_unary_one_way"} if args.chain != "copy" else None
        cpu: dict[str, dict[str, Cpu]] = {}
        raw = uvloop.run(measure(redis_url, db_url, tmp, gaps_s, samples, only, cpu))
    finally:
        if redis_pid:
            stop_pid(redis_pid)
        if own_pg:
            stop_postgres(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)
    results = {gap: {k: summarize(v) for k, v in runs.items()} for gap, runs in raw.items()}
    _show(results, chain)
    floor = floors(raw, chain, random.Random(1))
    required = floors(raw, GUARD_REQUIRED_CHAIN, random.Random(1)) if chain is GUARD_CHAIN else {}
    for gap, f in floor.items():
        print(f"gap {gap}: drawn totals of the chain p50 {f['drawn_p50_ms']:.3f} / p99 {f['drawn_p99_ms']:.3f}"
              f" / p99.9 {f['drawn_p99_9_ms']:.3f} ms")
        if gap in required:
            r = required[gap]
            print(f"gap {gap}: its required hops alone (no locked read, no book read) p50 {r['drawn_p50_ms']:.3f}"
                  f" / p99 {r['drawn_p99_ms']:.3f} / p99.9 {r['drawn_p99_9_ms']:.3f} ms")
    cpu_floor = _show_cpu(cpu)
    report = {"samples": samples, "chain_name": args.chain, "chain": [label for label, _ in chain],
              "hops": results, "floor": floor, "floor_required": required,
              "cpu_us_per_message": {g: {t: c._asdict() for t, c in per.items()} for g, per in cpu.items()},
              "copy_cpu_chain": [f"{label} ({side})" for label, _t, side in COPY_CPU_CHAIN],
              "copy_cpu_floor_us": cpu_floor}
    if args.out:
        Path(args.out).write_text(json.dumps(report))
    if not args.no_save:
        path = save_results("hops", report, baseline=not args.quick)
        print(f"saved {path}")
    return 0
