"""Ingest benchmark: RTDS frame received → LeaderTradeEvent delivered to a gRPC stream consumer.

Three processes over loopback: the RTDS load generator (``python -m sim load``), ingest (``python -m
services.ingest``) with 10,000 followed leaders in the hot index, and this process as the gRPC
consumer. Latency per event = consumer receive time − ``received_time_ns`` stamped by ingest when
the frame arrived (same host clock). Phase 1 runs the target load (2,000 frames/s, 5 % from
followed leaders); further phases step the rate up to find the sustained ceiling. Ingest RSS and
CPU are read from /proc. Results go to ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import orjson

from bench import internal_env, internal_security, memory_mb, process_cpu_s, save_results
from common.grpcclient import channel as grpc_channel

ROOT = Path(__file__).resolve().parents[1]


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of a list (ms), nearest-rank."""
    if not values:
        return {}
    s = sorted(values)

    def pick(q: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))], 3)
    return {"n": len(s), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "p99.9": pick(0.999),
            "max": round(s[-1], 3), "mean": round(sum(s) / len(s), 3)}


def proc_stats(pid: int) -> dict[str, float]:
    """RSS / peak RSS (MB) and CPU seconds of a process."""
    out = memory_mb(pid)
    cpu = process_cpu_s(pid)
    if cpu is not None:
        out["cpu_s"] = cpu
    return out


def _calibration_reader(redis_url: str, n: int, out: Any) -> None:
    """Child process: XREAD BLOCK one-way latencies of ``n`` entries (see :func:`calibrate`)."""
    import redis.asyncio as aioredis
    import uvloop

    async def read() -> None:
        r: Any = aioredis.from_url(redis_url)
        last: Any = await r.xadd("tt:bench:calibration", {"p": b"0"})
        out.put("ready")
        lat: list[float] = []
        while len(lat) < n:
            reply: Any = await r.xread({"tt:bench:calibration": last}, block=1000, count=100)
            for _stream, entries in reply or []:
                now = time.time_ns()
                for entry_id, fields in entries:
                    last = entry_id
                    lat.append((now - int(fields[b"p"])) / 1e6)
        out.put(lat)
        await r.aclose()
    uvloop.run(read())


async def calibrate(redis_url: str, n: int = 2000) -> dict[str, float]:
    """The machine's floor right now: Redis XADD → XREAD BLOCK one-way between two processes
    (about 0.3–0.4 ms p50 / 0.5–1.5 ms p99 on a quiet machine)."""
    import multiprocessing

    import redis.asyncio as aioredis

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_calibration_reader, args=(redis_url, n, queue))
    child.start()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, queue.get)
    r = aioredis.from_url(redis_url)
    for _ in range(n):
        await r.xadd("tt:bench:calibration", {"p": str(time.time_ns()).encode()})
        await asyncio.sleep(0.002)
    lat = await loop.run_in_executor(None, queue.get)
    await loop.run_in_executor(None, child.join)
    await r.delete("tt:bench:calibration")
    await r.aclose()
    return percentiles(lat)


async def seed_leaders(redis_url: str, n: int) -> list[str]:
    """``n`` ACTIVE subscriptions (one per leader) in the hot index, as control writes them."""
    import redis.asyncio as aioredis
    from google.protobuf.timestamp_pb2 import Timestamp

    from common import hotindex
    from tradingtools.control.v1 import subscription_pb2 as spb

    client = aioredis.from_url(redis_url, decode_responses=True)
    leaders = [f"0x{i:040x}" for i in range(1, n + 1)]
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns() - 3600 * 10**9)
    for start in range(0, n, 50):
        await asyncio.gather(*(hotindex.upsert(client, spb.Subscription(
            id=f"sub_bench_{i}", leader_proxy=leader, follower_proxy="0x" + "f" * 40,
            state=spb.SUBSCRIPTION_STATE_ACTIVE, create_time=ts,
            sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="10")))
            for i, leader in enumerate(leaders[start:start + 50], start)))
    await client.aclose()
    return leaders


async def wait_serving(port: int, timeout_s: float = 60.0) -> None:
    """Until the gRPC health check answers SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("ingest did not start")
        await asyncio.sleep(0.2)


async def consume(port: int, samples: list[tuple[int, float]], ready: asyncio.Event, after: str = "0") -> None:
    """Collect (sequence number, latency ms) of every delivered event."""
    from tradingtools.market.v1 import market_pb2 as mpb
    from tradingtools.market.v1 import market_pb2_grpc as mgrpc

    async with grpc_channel(f"127.0.0.1:{port}", internal_security()) as channel:
        call = mgrpc.IngestServiceStub(channel).StreamLeaderTrades(
            mpb.StreamLeaderTradesRequest(after_cursor=after, consumer="bench"))
        await call.wait_for_connection()
        ready.set()
        async for resp in call:
            now = time.time_ns()
            samples.append((int(resp.event.tx_hash, 16), (now - resp.event.received_time_ns) / 1e6))


def spawn(module_args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``python -m <module_args>`` in the repository."""
    return subprocess.Popen([sys.executable, "-m", *module_args], cwd=ROOT, env=env, **kwargs)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from common.embedded import free_port, start_postgres, start_redis, stop_pid, stop_postgres
    from common.storage import apply_migrations

    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-ingest-"))
    redis_url, redis_pid = os.environ.get("REDIS_URL", ""), 0
    if not redis_url:
        redis_url, redis_pid = start_redis(tmp / "redis", durable=False)
    db_url = os.environ.get("DATABASE_URL", "") or start_postgres(tmp / "pg")
    apply_migrations(db_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        import redis as sync_redis

        sync_redis.Redis.from_url(redis_url).flushdb()
        floor = await calibrate(redis_url)
        leaders = await seed_leaders(redis_url, args.leaders)
        leaders_file = tmp / "leaders.txt"
        leaders_file.write_text("\n".join(leaders))
        rates = [args.rate, *args.ceiling_rates]
        durations = [args.duration] + [args.ceiling_duration] * len(args.ceiling_rates)
        gen = spawn(["sim", "load", "--port", "0", "--durations", *(str(d) for d in durations),
                     "--rate", *(str(r) for r in rates), "--leaders-file", str(leaders_file),
                     "--followed-share", str(args.followed_share), "--linger", "3"],
                    {**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE)
        procs.append(gen)
        assert gen.stdout is not None
        port = orjson.loads(gen.stdout.readline())["port"]
        grpc_port = free_port()
        env = {**os.environ, **internal_env(), "REDIS_URL": redis_url, "DATABASE_URL": db_url, "TT_RTDS_URL": f"ws://127.0.0.1:{port}",
               "TT_INGEST_GRPC_PORT": str(grpc_port), "TT_INGEST_GRPC_HOST": "127.0.0.1",
               "TT_TUNE_INGEST_CLOB_ENABLED": "false", "TT_TUNE_INGEST_POLL_ENABLED": "false",
               "TT_TUNE_INGEST_RTDS_STALL_S": "30", "MALLOC_TRIM_THRESHOLD_": "268435456"}
        ingest = spawn(["services.ingest"], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ingest)
        await wait_serving(grpc_port)
        samples: list[tuple[int, float]] = []
        # This process stands in for the stream's production consumer (the router): same GC settings
        # as the router's __main__, so its collections are not charged to ingest.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        ready = asyncio.Event()
        consumer = asyncio.create_task(consume(grpc_port, samples, ready, after="0"))
        await ready.wait()
        idle = proc_stats(ingest.pid)
        phases: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        for _ in rates:
            cpu0 = proc_stats(ingest.pid).get("cpu_s", 0.0)
            line = await loop.run_in_executor(None, gen.stdout.readline)
            if not line:
                break
            result = orjson.loads(line)
            after = proc_stats(ingest.pid)
            phases.append({**result, "ingest": after, "cpu_share": round(
                (after.get("cpu_s", 0.0) - cpu0) / max(result["elapsed_s"], 1e-9), 3)})
        await asyncio.sleep(2.0)  # drain
        consumer.cancel()
        with contextlib.suppress(BaseException):
            await consumer
        report = summarize(args, rates, phases, samples, idle, proc_stats(ingest.pid))
        report["host"]["floor_xadd_to_xread_ms"] = floor
        return report
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_pid:
            stop_pid(redis_pid)
        if not os.environ.get("DATABASE_URL"):
            stop_postgres(tmp / "pg")


def summarize(args: argparse.Namespace, rates: list[float], phases: list[dict[str, Any]],
              samples: list[tuple[int, float]], idle: dict[str, float], final: dict[str, float]) -> dict[str, Any]:
    """Per-phase latency, delivery and backlog figures, and the sustained ceiling."""
    out_phases = []
    start_seq = 1
    ceiling = 0.0
    for rate, phase in zip(rates, phases, strict=False):
        end_seq = phase["next_seq"]
        lat = [ms for seq, ms in samples if start_seq <= seq < end_seq]
        span = end_seq - start_seq
        warm = start_seq + int(span * args.warmup_share)
        steady = [ms for seq, ms in samples if warm <= seq < end_seq]
        half = warm + (end_seq - warm) // 2
        first = percentiles([ms for seq, ms in samples if warm <= seq < half])
        second = percentiles([ms for seq, ms in samples if half <= seq < end_seq])
        achieved = phase["sent"] / phase["elapsed_s"]
        delivered_all = len(lat) == phase["followed"]
        stats = percentiles(steady)
        no_growth = bool(first and second and second["p50"] <= max(2 * first["p50"], first["p50"] + 1.0))
        sustained = (achieved >= 0.95 * rate and delivered_all and no_growth
                     and stats.get("p99", 1e9) <= args.ceiling_p99_ms)
        if sustained:
            ceiling = max(ceiling, achieved)
        out_phases.append({"target_rate": rate, "achieved_rate": round(achieved, 1), "frames": phase["sent"],
                           "followed_frames": phase["followed"], "delivered": len(lat),
                           "delivered_all": delivered_all, "latency_ms": stats,
                           "first_half_ms": first, "second_half_ms": second, "no_backlog_growth": no_growth,
                           "sustained": sustained, "ingest_cpu_share": phase["cpu_share"],
                           "ingest_rss_mb": round(phase["ingest"].get("VmRSS", 0.0), 1)})
        start_seq = end_seq
    main = out_phases[0] if out_phases else {}
    return {
        "benchmark": "ingest", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()}, "followed_leaders": args.leaders,
        "followed_share": args.followed_share, "phase_duration_s": args.duration,
        "ceiling_phase_duration_s": args.ceiling_duration,
        "target": {"rate": args.rate, "p99_ms_max": 3.0, "rss_mb_max": 200.0},
        "result": {"p50_ms": main.get("latency_ms", {}).get("p50"), "p99_ms": main.get("latency_ms", {}).get("p99"),
                   "p99.9_ms": main.get("latency_ms", {}).get("p99.9"),
                   "no_backlog_growth": main.get("no_backlog_growth"), "delivered_all": main.get("delivered_all"),
                   "sustained_ceiling_frames_per_s": round(ceiling, 1),
                   "ingest_rss_mb_idle_10k_leaders": round(idle.get("VmRSS", 0.0), 1),
                   "ingest_rss_mb_peak": round(final.get("VmHWM", 0.0), 1)},
        "phases": out_phases,
    }


def main(argv: list[str]) -> int:
    """Run the benchmark, print the summary, save JSON under bench/results/."""
    parser = argparse.ArgumentParser(prog="bench ingest", description=__doc__)
    parser.add_argument("--rate", type=float, default=2000.0, help="target RTDS frames/s")
    parser.add_argument("--duration", type=float, default=50.0, help="seconds at the target rate")
    parser.add_argument("--ceiling-duration", type=float, default=12.0, help="seconds per ceiling step")
    parser.add_argument("--ceiling-rates", type=float, nargs="*", default=[4000.0, 6000.0, 8000.0, 10000.0])
    parser.add_argument("--ceiling-p99-ms", type=float, default=25.0, help="p99 a ceiling phase must stay under")
    parser.add_argument("--leaders", type=int, default=10_000)
    parser.add_argument("--followed-share", type=float, default=0.05)
    parser.add_argument("--warmup-share", type=float, default=0.1, help="share of each phase not measured")
    parser.add_argument("--quick", action="store_true", help="10 s phases, two ceiling steps")
    args, _others = parser.parse_known_args(argv)  # `python -m bench` passes every option to every bench
    if args.quick:
        args.duration, args.ceiling_duration, args.ceiling_rates = 10.0, 8.0, [4000.0, 8000.0]
    import uvloop

    report = uvloop.run(run(args))
    path = save_results("ingest", report, baseline=not args.quick)
    r = report["result"]
    print(f"ingest: {args.rate:.0f} frames/s, {args.followed_share:.0%} followed, {args.leaders} leaders")
    print(f"  frame received -> gRPC consumer: p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
          f"p99.9 {r['p99.9_ms']} ms  (target p99 <= 3 ms)")
    print(f"  no backlog growth: {r['no_backlog_growth']}  delivered all: {r['delivered_all']}")
    print(f"  sustained ceiling: {r['sustained_ceiling_frames_per_s']} frames/s")
    print(f"  ingest RSS: {r['ingest_rss_mb_idle_10k_leaders']} MB idle with {args.leaders} leaders, "
          f"peak {r['ingest_rss_mb_peak']} MB (target <= 200 MB)")
    for p in report["phases"]:
        lat = p["latency_ms"]
        print(f"  phase {p['target_rate']:>7.0f}/s achieved {p['achieved_rate']:>7.0f}/s  delivered "
              f"{p['delivered']}/{p['followed_frames']}  p50 {lat.get('p50')} p99 {lat.get('p99')} "
              f"p99.9 {lat.get('p99.9')} ms  cpu {p['ingest_cpu_share']:.0%}  sustained {p['sustained']}")
    floor = report["host"]["floor_xadd_to_xread_ms"]
    print(f"  machine floor now: Redis XADD->XREAD one-way p50 {floor.get('p50')} ms p99 {floor.get('p99')} ms "
          f"(quiet machine: 0.32-0.43 / 0.55-1.5 ms); load average {report['machine']['load_average_at_end']}")
    print(f"  saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
