"""Guard: 100,000 armed triggers over 5,000 assets, price ticks at 10,000/s.

    python -m bench guard [--triggers 100000] [--assets 5000] [--rate 10000] [--seconds 20] [--warmup-s 3]
                          [--engine-ticks 200000] [--no-service] [--order-rate 0] [--no-save]

Two measurements:

1. **Engine, in-process**: the triggers are loaded from PostgreSQL exactly as guard loads them at
   start-up (timed), then a random-walk tick stream is evaluated: tick parsed → fire decision
   (``tick_view.view`` + ``Engine.on_tick``), per tick, and for the ticks that fired.
2. **Service**: ``python -m services.guard`` runs as its own process against embedded PostgreSQL and
   Redis; this process serves it the PriceTick stream (an ingest stand-in over the real durable log,
   fed at ``--rate`` ticks/s) and hosts an executor stand-in that records when each SubmitOrder
   arrives. Latency = SubmitOrder received − the tick's ``received_time_ns`` (stamped just before the
   tick enters the log, i.e. when ingest would have received the frame); the guard-side decision
   time (``Order.routed_time_ns``) is reported too. Also: guard's start-up load time (from its log)
   and its RSS after the load and at its peak.
3. **Order events** (``--order-rate N``, after the ticks): copy BUYs placed and filled on seeded positions,
   N events/s written to the executor's order-event log: guard's CPU per event, PostgreSQL commits per event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench import (
    CpuMeter,
    internal_env,
    internal_security,
    memory_mb,
    print_table,
    process_cpu_s,
    save_results,
    storage_pids,
    summarize,
)
from bench._guard_standins import _Executor, _Ingest, _load_s_from_log, _PgSampler
from bench._triggers import Walk, asset_id, seed_triggers
from common.config import project_root
from common.decimals import fmt
from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres
from common.grpcserver import GrpcServer, start_server
from common.marketstate import MarketInfo, write_market
from common.storage import apply_migrations, create_pool, create_redis
from common.streams import ORDER_EVENTS, PRICE_TICKS, DurableLog, create_stream_redis
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain import tick_view
from services.guard.domain.trigger_index import load
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

TARGET_P99_MS = 5.0
TARGET_LOAD_S = 3.0
TARGET_RSS_MB = 300.0
CENT = Decimal("0.01")


async def _engine_bench(db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    store = TriggerStore(pool, lambda: datetime.now(UTC))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0, t0 = time.process_time(), time.perf_counter()
    specs = await store.load_armed()
    t1 = time.perf_counter()
    engine = load(specs)
    c2, t2 = time.process_time(), time.perf_counter()
    await pool.close()
    del specs
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    walk = Walk(args.assets, random.Random(7))
    all_ms: list[float] = []
    fired_ms: list[float] = []
    fires = 0
    max_age = 2_000_000_000
    started = time.perf_counter()
    for _ in range(args.engine_ticks):
        a, p = walk.step()
        now = time.time_ns()
        tick = mpb.PriceTick(asset_id=asset_id(a), best_bid=fmt(p), best_ask=fmt(p + CENT), mid=fmt(p + CENT / 2),
                             received_time_ns=now, kind=mpb.TICK_KIND_PRICE_CHANGE)
        s = time.perf_counter_ns()
        view = tick_view.view(tick, now, max_age)
        out = engine.on_tick(view.asset_id, view.prices, stale=view.stale)
        e = time.perf_counter_ns()
        all_ms.append((e - s) / 1e6)
        if out.fired:
            fires += len(out.fired)
            fired_ms.append((e - s) / 1e6)
    elapsed = time.perf_counter() - started
    return {"load_db_s": round(t1 - t0, 3), "build_engine_s": round(t2 - t1, 3), "load_total_s": round(t2 - t0, 3),
            "load_cpu_s": round(c2 - c0, 3),
            "loaded": len(engine) + fires, "bench_process_maxrss_growth_mb": round(rss1 - rss0, 1),
            "tick_to_decision": summarize(all_ms), "tick_to_decision_fired": summarize(fired_ms), "fires": fires,
            "ticks": args.engine_ticks, "ticks_per_s_capacity": round(args.engine_ticks / elapsed)}








async def _service_bench(db_url: str, redis_url: str, args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    redis = create_redis(redis_url)
    for a in range(args.assets):
        await write_market(redis, MarketInfo(asset_id(a), "0x" + "ab" * 32, CENT, Decimal(1)))
    stream_redis = create_stream_redis(redis_url)
    log_ = DurableLog(stream_redis, PRICE_TICKS, maxlen=200_000)
    ingest = _Ingest(log_)
    executor = _Executor()
    servers: list[GrpcServer] = [
        await start_server("127.0.0.1", 0, lambda s: (mgrpc.add_IngestServiceServicer_to_server(ingest, s),
                                                      ["tradingtools.market.v1.IngestService"])[1],
                           security=internal_security()),
        await start_server("127.0.0.1", 0, lambda s: (egrpc.add_ExecutorServiceServicer_to_server(executor, s),
                                                      ["tradingtools.execution.v1.ExecutorService"])[1],
                           security=internal_security())]
    env = {**os.environ, **internal_env(), "DATABASE_URL": db_url, "REDIS_URL": redis_url,
           "TT_GUARD_GRPC_PORT": "0", "TT_INGEST_GRPC_TARGET": f"127.0.0.1:{servers[0].port}",
           "TT_EXECUTOR_GRPC_TARGET": f"127.0.0.1:{servers[1].port}", "TT_CONTROL_GRPC_TARGET": "127.0.0.1:1",
           "TT_TUNE_GUARD_PERF_INTERVAL_S": "3600", "TT_TUNE_GUARD_TICK_MAX_AGE_S": "5",
           "TT_TUNE_GUARD_STATS_LOG_S": "2", "TT_TUNE_GUARD_TICK_SOURCE": args.source}
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "268435456")
    spawned = time.perf_counter()
    with log_path.open("ab") as out:
        profile = os.environ.get("TT_BENCH_GUARD_PROFILE")  # a path: run guard under cProfile
        cmd = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "services.guard"]
        proc = await asyncio.create_subprocess_exec(*cmd, cwd=project_root(), env=env, stdout=out,
                                                    stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while '"guard started"' not in (text := await asyncio.to_thread(log_path.read_text, errors="replace")):
            if time.monotonic() > deadline or proc.returncode is not None:
                raise RuntimeError("guard did not start: " + text[-2000:])
            await asyncio.sleep(0.05)
        if args.source == "grpc":
            await asyncio.wait_for(ingest.connected.wait(), timeout=60)
        ready_s = time.perf_counter() - spawned
        await asyncio.sleep(0.5)
        rss_loaded = memory_mb(proc.pid)
        walk = Walk(args.assets, random.Random(11))
        prices = {p: (fmt(Decimal(p) / 100), fmt(Decimal(p + 1) / 100), fmt(Decimal(2 * p + 1) / 200))
                  for p in range(1, 100)}
        assets = [asset_id(a) for a in range(args.assets)]
        batch = max(1, args.rate // 200)  # every 5 ms
        interval = batch / args.rate
        total = int(args.rate * (args.warmup_s + args.seconds))
        warm_until_ns = time.time_ns() + int(args.warmup_s * 1e9)
        sent = 0
        pg_meter = CpuMeter({"postgres": storage_pids(args.run_dir)["postgres"]})
        sampler = _PgSampler(db_url)
        cpu0 = process_cpu_s(proc.pid) or 0.0
        started = next_at = time.perf_counter()
        measuring = False
        while sent < total:
            now_ns = time.time_ns()
            if not measuring and now_ns >= warm_until_ns:
                measuring, measure_sent, measure_t0 = True, sent, time.perf_counter()
                pg_meter.start()
                sampler.start()
            payloads = []
            for _ in range(batch):
                a, p = walk.step()
                bid, ask, mid = prices[int(p * 100)]
                payloads.append(mpb.PriceTick(
                    asset_id=assets[a], kind=mpb.TICK_KIND_PRICE_CHANGE, best_bid=bid, best_ask=ask, mid=mid,
                    tick_size="0.01", venue_time_ms=now_ns // 1_000_000, received_time_ns=now_ns).SerializeToString())
            await log_.append_many(payloads)
            sent += batch
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        produce_s = time.perf_counter() - started
        guard_cpu = ((process_cpu_s(proc.pid) or 0.0) - cpu0) / produce_s
        pg_cpu_s = pg_meter.stop()["postgres"] if measuring else 0.0
        pg_statements = sampler.stop()
        measured_ticks = max(1, sent - measure_sent) if measuring else 1
        await asyncio.sleep(2.0)
        orders = await _orders_phase(db_url, stream_redis, proc.pid, args) if args.order_rate else {}
        rss_end = memory_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
        for srv in servers:
            await srv.stop(0)
        await redis.aclose()
        await stream_redis.aclose()
    samples = [(arr, o) for arr, o in executor.arrivals if o.received_time_ns >= warm_until_ns]
    sell_ms = [(arr - o.received_time_ns) / 1e6 for arr, o in samples]
    decision_ms = [(o.routed_time_ns - o.received_time_ns) / 1e6 for _a, o in samples]
    doubles = len(executor.arrivals) - len(executor.seen)
    return {"tick_source": args.source, "tick_to_sell_received": summarize(sell_ms),
            "tick_to_order_built_in_guard": summarize(decision_ms),
            "sells": len(executor.arrivals), "double_submits": doubles,
            "ticks_sent": sent, "guard_cpu_fraction_of_one_core": round(guard_cpu, 2), "rate_target": args.rate,
            "guard_cpu_us_per_tick": round(guard_cpu * 1e6 / max(sent / max(produce_s, 1e-9), 1), 1),
            "postgres_cpu_us_per_tick": round(pg_cpu_s * 1e6 / measured_ticks, 1),
            "postgres_busy_by_statement": pg_statements,
            "measure_s": round(time.perf_counter() - measure_t0, 1) if measuring else 0.0,
            "rate_achieved": round(sent / max(produce_s, 1e-9)),
            "guard_start_to_streaming_s": round(ready_s, 3), "guard_load_s": _load_s_from_log(log_path),
            "guard_rss_after_load_mb": round(rss_loaded.get("VmRSS", 0.0), 1),
            "guard_rss_end_mb": round(rss_end.get("VmRSS", 0.0), 1),
            "guard_rss_peak_mb": round(rss_end.get("VmHWM", 0.0), 1),
            "orders": orders}




async def _orders_phase(db_url: str, stream_redis: Any, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """Copy BUYs on seeded positions (subscriptions without exits) at ``--order-rate`` events/s into the
    order-event log, each a PLACED then a FILLED: guard's CPU per event and PostgreSQL commits per event."""
    n_positions = min(200, args.assets)
    now = datetime.now(UTC)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy, leader_proxy, label,"
            " state, mode, sizing, filters, risk, exits, perf, create_time, update_time) VALUES ('sub_bench', 'u_1',"
            " 'w_0', %s, %s, '', 'ACTIVE', 'PAPER', '{}', '{}', '{}', '{}', '{}', %s, %s) ON CONFLICT DO NOTHING",
            ("0x" + "0" * 40, "0x" + "e" * 40, now, now))
        conn.commit()

    def commits() -> int:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                               ).fetchone()
            return int(row[0]) if row else 0

    log_ = DurableLog(stream_redis, ORDER_EVENTS)
    total = int(args.order_rate * args.seconds)
    batch = max(1, args.order_rate // 200)
    interval = batch / args.order_rate
    sent = 0
    commits0 = await asyncio.to_thread(commits)
    cpu0 = process_cpu_s(pid) or 0.0
    started = next_at = time.perf_counter()
    while sent < total:
        payloads = []
        for _ in range(batch):
            k, kind = divmod(sent, 2)
            a = k % n_positions
            ev = epb.OrderEvent(
                event_id=f"oev_b{sent}", type=epb.ORDER_EVENT_TYPE_FILLED if kind else epb.ORDER_EVENT_TYPE_PLACED,
                client_order_id=f"co_b{k}", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_bench",
                follower_wallet_id="w_0", follower_proxy="0x" + "0" * 40, asset_id=asset_id(a), side=cpb.SIDE_BUY,
                filled_size="5" if kind else "", avg_price="0.5" if kind else "")
            payloads.append(ev.SerializeToString())
            sent += 1
        await log_.append_many(payloads)
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    produce_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the last events handled
    cpu = (process_cpu_s(pid) or 0.0) - cpu0
    await asyncio.sleep(1.0)  # PostgreSQL's statistics flushed
    used = await asyncio.to_thread(commits) - commits0 - 2
    return {"events": sent, "rate_achieved": round(sent / produce_s),
            "guard_cpu_us_per_event": round(cpu * 1e6 / sent, 1), "pg_commits_per_event": round(used / sent, 3)}


async def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tt-bench-guard-") as tmp:
        pgdata = Path(tmp) / "pg"
        os.chmod(tmp, 0o755)
        db_url = start_postgres(pgdata)
        redis_url, redis_pid = start_redis(Path(tmp) / "redis", durable=False)
        try:
            apply_migrations(db_url)
            t0 = time.perf_counter()
            seed_triggers(db_url, args.triggers, args.assets, random.Random(3))
            print(f"seeded {args.triggers} triggers over {args.assets} assets in {time.perf_counter() - t0:.1f} s",
                  flush=True)
            engine = await _engine_bench(db_url, args)
            print(f"start-up load in-process: {engine['load_total_s']} s (query {engine['load_db_s']} s, engine "
                  f"{engine['build_engine_s']} s; {engine['load_cpu_s']} s CPU); engine capacity "
                  f"{engine['ticks_per_s_capacity']} ticks/s, {engine['fires']} fires", flush=True)
            rows = {"engine tick→decision": engine["tick_to_decision"],
                    "engine (fired ticks)": engine["tick_to_decision_fired"]}
            result: dict[str, Any] = {"triggers": args.triggers, "assets": args.assets, "engine": engine}
            if not args.no_service:
                args.run_dir = Path(tmp)
                log_path = Path(os.environ.get("TT_BENCH_GUARD_LOG", str(Path(tmp) / "guard.log")))
                service = await _service_bench(db_url, redis_url, args, log_path)
                result["service"] = service
                rows["tick→order built"] = service["tick_to_order_built_in_guard"]
                rows["tick→SELL received"] = service["tick_to_sell_received"]
                print(f"service: {service['ticks_sent']} ticks at {service['rate_achieved']}/s, "
                      f"{service['sells']} SELLs, {service['double_submits']} double submits, guard CPU "
                      f"{service['guard_cpu_fraction_of_one_core']:.0%} of a core; guard load "
                      f"{service['guard_load_s']} s, RSS after load {service['guard_rss_after_load_mb']} MB, "
                      f"peak {service['guard_rss_peak_mb']} MB", flush=True)
                print(f"CPU per tick: guard {service['guard_cpu_us_per_tick']} µs, PostgreSQL "
                      f"{service['postgres_cpu_us_per_tick']} µs; PostgreSQL busy with (share of samples): "
                      f"{service['postgres_busy_by_statement']}", flush=True)
                if service["orders"]:
                    print(f"order events: {service['orders']}", flush=True)
            print_table(rows, TARGET_P99_MS)
            if not args.no_save:
                path = save_results("guard", result, baseline=not args.no_service)
                print(f"saved {path.relative_to(project_root())}", flush=True)
        finally:
            stop_pid(redis_pid)
            stop_postgres(pgdata)
    return 0


def main(argv: list[str]) -> int:
    """Run the guard benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench guard")
    parser.add_argument("--triggers", type=int, default=100_000)
    parser.add_argument("--assets", type=int, default=5_000)
    parser.add_argument("--rate", type=int, default=10_000, help="ticks per second into guard")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--engine-ticks", type=int, default=200_000)
    parser.add_argument("--no-service", action="store_true", help="only the in-process engine measurement")
    parser.add_argument("--order-rate", type=int, default=0,
                        help="after the ticks: copy order events per second into guard (0 = none)")
    parser.add_argument("--no-save", action="store_true", help="do not write a result file")
    parser.add_argument("--source", choices=("grpc", "log"), default="log",
                        help="how guard reads ticks (TT_TUNE_GUARD_TICK_SOURCE)")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))
