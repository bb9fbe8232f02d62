"""What one hop of the copy path costs when the processes at both ends were idle in between.

``python -m bench hops [--gaps-ms 1,5,50] [--samples 1000] [--quick] [--no-save]``

The copy path crosses the same transports for every leader trade: a websocket frame into ingest, a
Redis script (dedupe + append), a gRPC stream hop to the router, a PostgreSQL read beside a Redis
read, a Redis script (emit), a gRPC hop to the executor, a Redis read (the book), a PostgreSQL
insert with its commit (the intent), and the POST. On this machine a process that has slept for a
few milliseconds takes far longer to wake than one that was busy a moment ago, so at 200 trades/s
(a message every 5 ms) each hop costs several times its back-to-back figure.

Each transport is measured between separate processes on loopback, one message every ``gap``
(both ends sleep in between, as the pipeline's stages do between trades): one-way for raw TCP
(the websocket and HTTP hops are a TCP write each) and a grpc.aio server stream (read with the
``GRPC_EXPERIMENTS`` the services set, and with gRPC's default EventEngine client), round trips for
Redis (``GET``), PostgreSQL (prepared ``SELECT 1``) and a PostgreSQL ``INSERT`` with its commit.
The sum of those hops along the copy path is the transport floor of *frame received → POST
received* at that spacing, before any of the services' own work. Results go to
``bench/results/hops-<utc>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import uvloop

from bench import save_results, summarize
from common.fastredis import FastRedis
from services import GRPC_EXPERIMENTS as SERVICES_GRPC_EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 20

# The copy path's hops, in order, as (label, measured transport).
CHAIN = (
    ("RTDS frame → ingest", "tcp_one_way"),
    ("ingest: dedupe + append script", "redis_rtt"),
    ("ingest → router (gRPC stream)", "grpc_one_way"),
    ("router: PostgreSQL read ∥ Redis read", "pg_rtt"),
    ("router: emit script", "redis_rtt"),
    ("router → executor (gRPC stream)", "grpc_one_way"),
    ("executor: book read", "redis_rtt"),
    ("executor: intent INSERT + commit", "pg_insert_rtt"),
    ("executor → Insiders API (POST)", "tcp_one_way"),
)


async def _round_trips(call: Callable[[], Awaitable[Any]], gap_s: float, n: int) -> list[float]:
    """Milliseconds per ``call()``, one every ``gap_s`` (a sleep in between), after a warm-up."""
    out: list[float] = []
    for i in range(n + WARMUP):
        if gap_s:
            await asyncio.sleep(gap_s)
        t = time.perf_counter_ns()
        await call()
        if i >= WARMUP:
            out.append((time.perf_counter_ns() - t) / 1e6)
    return out


def _peer(kind: str, tmp: Path, gap_s: float, count: int,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "bench._hops_peer", kind, str(port_file), str(gap_s),
                             str(count)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} peer did not start")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def _one_way_ms(pairs: list[tuple[int, int]] | list[list[int]]) -> list[float]:
    """Milliseconds from send to receipt of each ``(sent_ns, received_ns)`` after the warm-up."""
    return [(r - s) / 1e6 for s, r in pairs[WARMUP:]]


async def _tcp_one_way(tmp: Path, gap_s: float, n: int) -> list[float]:
    proc, port = _peer("tcp", tmp, gap_s, n + WARMUP)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pairs = []
        for _ in range(n + WARMUP):
            raw = await reader.readexactly(8)
            pairs.append((int.from_bytes(raw, "little"), time.time_ns()))
        writer.close()
        return _one_way_ms(pairs)
    finally:
        proc.wait(timeout=30)


async def _grpc_one_way(tmp: Path, gap_s: float, n: int, experiments: str) -> list[float]:
    """A grpc.aio server stream read by a client process with ``GRPC_EXPERIMENTS=experiments``."""
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
    proc, port = _peer("grpc", tmp, gap_s, n + WARMUP, env)
    try:
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._hops_peer", "grpc-client", str(port), str(n + WARMUP),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError(f"grpc client peer exited with {client.returncode}")
        return _one_way_ms(json.loads(out))
    finally:
        proc.wait(timeout=30)


async def measure(redis_url: str, db_url: str, tmp: Path, gaps_s: list[float], samples: int) -> dict[str, Any]:
    """Every transport at every gap: ``{gap label: {transport: summary}}``."""
    redis = FastRedis(redis_url)
    await redis.set("tt:bench:hops", "x")
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_hops (id bigserial PRIMARY KEY, v text NOT NULL)")
    out: dict[str, Any] = {}
    try:
        for gap_s in gaps_s:
            n = samples if gap_s < 0.02 else max(50, samples // 5)
            runs: dict[str, list[float]] = {
                "tcp_one_way": await _tcp_one_way(tmp, gap_s, n),
                "grpc_one_way": await _grpc_one_way(tmp, gap_s, n, SERVICES_GRPC_EXPERIMENTS),
                "grpc_one_way_event_engine_client": await _grpc_one_way(tmp, gap_s, n, ""),
                "redis_rtt": await _round_trips(lambda: redis.get("tt:bench:hops"), gap_s, n),
                "pg_rtt": await _round_trips(lambda: conn.execute("SELECT 1", prepare=True), gap_s, n),
                "pg_insert_rtt": await _round_trips(
                    lambda: conn.execute("INSERT INTO bench_hops (v) VALUES ('x')", prepare=True), gap_s, n),
            }
            out[f"{gap_s * 1000:g} ms"] = {k: summarize(v) for k, v in runs.items()}
            print(f"gap {gap_s * 1000:g} ms: " + ", ".join(
                f"{k} p50 {s['p50_ms']:.3f}" for k, s in out[f"{gap_s * 1000:g} ms"].items()), flush=True)
    finally:
        redis.close()
        with contextlib.suppress(psycopg.Error):  # the scratch table must not stay in a DATABASE_URL database
            await conn.execute("DROP TABLE IF EXISTS bench_hops")
        await conn.close()
    return out


def chains(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Sum of the copy path's hop p50s (and p99s: an upper bound) at each gap."""
    return {gap: {"p50_sum_ms": round(sum(hops[t]["p50_ms"] for _, t in CHAIN), 3),
                  "p99_sum_ms": round(sum(hops[t]["p99_ms"] for _, t in CHAIN), 3)}
            for gap, hops in results.items()}


def _show(results: dict[str, Any]) -> None:
    gaps = list(results)
    print(f"{'hop of the copy path':40}" + "".join(f"{'gap ' + g:>22}" for g in gaps))
    print(f"{'':40}" + "".join(f"{'p50 / p99 ms':>22}" for _ in gaps))
    for label, t in CHAIN:
        print(f"{label:40}" + "".join(f"{results[g][t]['p50_ms']:>13.3f} / {results[g][t]['p99_ms']:<6.3f}"
                                      for g in gaps))
    extra = "grpc_one_way_event_engine_client"
    print(f"{'(gRPC hop, grpc default client)':40}" + "".join(
        f"{results[g][extra]['p50_ms']:>13.3f} / {results[g][extra]['p99_ms']:<6.3f}" for g in gaps))
    sums = chains(results)
    print(f"{'transport floor of frame → POST':40}" + "".join(
        f"{sums[g]['p50_sum_ms']:>13.3f} / {sums[g]['p99_sum_ms']:<6.3f}" for g in gaps))


def main(argv: list[str]) -> int:
    """Measure the hops, print the table, save the results."""
    parser = argparse.ArgumentParser(prog="bench hops", description=__doc__.splitlines()[0])
    parser.add_argument("--gaps-ms", default="1,5,50", help="comma-separated idle times between messages")
    parser.add_argument("--samples", type=int, default=1000, help="per transport and gap (a fifth at gaps ≥ 20 ms)")
    parser.add_argument("--quick", action="store_true", help="200 samples")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    gaps_s = [float(g) / 1000 for g in args.gaps_ms.split(",") if g.strip()]
    samples = 200 if args.quick else args.samples

    from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-hops-"))
    redis_url, redis_pid = os.environ.get("REDIS_URL", ""), 0
    if not redis_url:
        redis_url, redis_pid = start_redis(tmp / "redis", durable=False)
    own_pg = not os.environ.get("DATABASE_URL")
    db_url = os.environ.get("DATABASE_URL", "") or start_postgres(tmp / "pg")
    try:
        results = uvloop.run(measure(redis_url, db_url, tmp, gaps_s, samples))
    finally:
        if redis_pid:
            stop_pid(redis_pid)
        if own_pg:
            stop_postgres(tmp / "pg")
    _show(results)
    if not args.no_save:
        path = save_results("hops", {"samples": samples, "chain": [label for label, _ in CHAIN],
                                     "hops": results, "floor": chains(results)})
        print(f"saved {path}")
    return 0
