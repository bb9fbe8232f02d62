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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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


async def _grpc_pairs(server: str, client: list[str], tmp: Path, gap_s: float, n: int,
                      experiments: str, auth: bool = False) -> list[float]:
    """One-way milliseconds between a grpc.aio ``server`` peer and a ``client`` peer process (its ``[sent,
    received]`` pairs on stdout), both with ``GRPC_EXPERIMENTS=experiments`` (and the internal token checked
    and sent when ``auth``)."""
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments, "TT_BENCH_HOPS_AUTH": "1" if auth else "0"}
    proc, port = _peer(server, tmp, gap_s, n + WARMUP, env)
    try:
        peer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._hops_peer", client[0], str(port), str(n + WARMUP), *client[1:],
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await peer.communicate()
        if peer.returncode != 0:
            raise RuntimeError(f"{client[0]} peer exited with {peer.returncode}")
        return _one_way_ms(json.loads(out))
    finally:
        proc.wait(timeout=30)


async def _grpc_one_way(tmp: Path, gap_s: float, n: int, experiments: str, auth: bool = False) -> list[float]:
    """A grpc.aio server stream read by a client process with ``GRPC_EXPERIMENTS=experiments``."""
    return await _grpc_pairs("grpc", ["grpc-client"], tmp, gap_s, n, experiments, auth)


async def _grpc_unary_one_way(tmp: Path, gap_s: float, n: int, experiments: str, auth: bool = False) -> list[float]:
    """The request leg of a grpc.aio unary call: sent by a client process → the server's handler entered."""
    return await _grpc_pairs("grpc-unary", ["grpc-unary-client", str(gap_s)], tmp, gap_s, n, experiments, auth)


# ``_auth``: the same with the internal token sent and checked, as between the services (the chains use those).
TRANSPORTS = ("tcp_one_way", "grpc_one_way", "grpc_one_way_auth", "grpc_one_way_event_engine_client",
              "grpc_unary_one_way", "grpc_unary_one_way_auth", "redis_rtt", "pg_rtt", "pg_insert_rtt")


async def _probe(name: str, redis: FastRedis, conn: psycopg.AsyncConnection[Any], tmp: Path, gap_s: float,
                 n: int) -> list[float]:
    """``n`` samples of one transport, one every ``gap_s``."""
    if name == "tcp_one_way":
        return await _tcp_one_way(tmp, gap_s, n)
    if name in ("grpc_one_way", "grpc_one_way_auth"):
        return await _grpc_one_way(tmp, gap_s, n, SERVICES_GRPC_EXPERIMENTS, auth=name.endswith("_auth"))
    if name == "grpc_one_way_event_engine_client":
        return await _grpc_one_way(tmp, gap_s, n, "")
    if name in ("grpc_unary_one_way", "grpc_unary_one_way_auth"):
        return await _grpc_unary_one_way(tmp, gap_s, n, SERVICES_GRPC_EXPERIMENTS, auth=name.endswith("_auth"))
    if name == "redis_rtt":
        return await _round_trips(lambda: redis.get("tt:bench:hops"), gap_s, n)
    if name == "pg_rtt":
        return await _round_trips(lambda: conn.execute("SELECT 1", prepare=True), gap_s, n)
    if name == "pg_insert_rtt":
        return await _round_trips(lambda: conn.execute("INSERT INTO bench_hops (v) VALUES ('x')", prepare=True),
                                  gap_s, n)
    raise ValueError(f"unknown transport {name!r}")


async def measure(redis_url: str, db_url: str, tmp: Path, gaps_s: list[float], samples: int,
                  only: set[str] | None = None) -> dict[str, dict[str, list[float]]]:
    """Every transport (or those in ``only``) at every gap: ``{gap label: {transport: samples in ms}}``."""
    redis = FastRedis(redis_url)
    await redis.set("tt:bench:hops", "x")
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_hops (id bigserial PRIMARY KEY, v text NOT NULL)")
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for gap_s in gaps_s:
            n = samples if gap_s < 0.02 else max(50, samples // 5)
            names = [t for t in TRANSPORTS if only is None or t in only]
            runs = {name: await _probe(name, redis, conn, tmp, gap_s, n) for name in names}
            out[f"{gap_s * 1000:g} ms"] = runs
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
        raw = uvloop.run(measure(redis_url, db_url, tmp, gaps_s, samples, only))
    finally:
        if redis_pid:
            stop_pid(redis_pid)
        if own_pg:
            stop_postgres(tmp / "pg")
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
    report = {"samples": samples, "chain_name": args.chain, "chain": [label for label, _ in chain],
              "hops": results, "floor": floor, "floor_required": required}
    if args.out:
        Path(args.out).write_text(json.dumps(report))
    if not args.no_save:
        path = save_results("hops", report, baseline=not args.quick)
        print(f"saved {path}")
    return 0
