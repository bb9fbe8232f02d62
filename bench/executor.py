"""Executor fan-out: one RoutedTrade with 1,000 orders → the last order POST received by the Insiders fake.

    python -m bench executor [--orders 1000] [--runs 20] [--warmup 2] [--no-transports] [--transport-runs 3]
                             [--single-rate 200 [--single-s 10] [--single-only]] [--no-save]

The executor runs as its own process (``python -m services.executor``) against embedded PostgreSQL
and Redis; this process serves it the routed-trade stream (a router stand-in over the real durable
log) and hosts the Insiders fake, which records each POST's arrival time. Each run appends one
RoutedTrade (in the router's parts when it is over 1 MiB); the clock starts just before the append and
stops at the fake's last POST arrival.
Runs are separated: the next starts once every order of the previous one is terminal. "executor
CPU" is the executor process's CPU time (its kernel CPU clock, ns resolution, sampled every 2 ms by
a thread) from the append to the last POST's arrival: on this 2-core machine the executor, the
fake, PostgreSQL and Redis share the cores, so CPU per fan-out is the figure that moves when the
executor gets cheaper, whatever else runs.

The transport comparison (default on; ``--no-transports`` skips it) measures the HTTP clients alone:
1,000 concurrent POSTs (after a warm-up burst on the same client, so connections are open) from
this process to the fake in its own process, to the last arrival, for ``common.http1``
(the executor's transport), aiohttp and httpx with an unlimited pool.

``--single-rate R`` adds the issue-4 (a) shape: RoutedTrades of one order each at R/s for
``--single-s`` seconds (after one second of warm-up), reporting executor CPU per order (from the
first append until every order is terminal, i.e. intent, POST, fill and booking), PostgreSQL CPU per
order (every backend: they all serve the executor here) and the statements and transactions the
executor sent per order (counted from PostgreSQL's statement log, by application name).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench import internal_env, internal_security, print_table, process_cpu_s, save_results, storage_pids, summarize
from bench._pg_statements import count_statements, log_statements
from bench._transports import compare_transports
from common.config import project_root
from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres
from common.grpcserver import GrpcServer, start_server
from common.marketstate import BookSnapshot, write_book
from common.routed import expand
from common.storage import apply_migrations, create_redis
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis, serve_log
from services.router.outbound import split_routed
from sim.insiders import InsidersFake
from sim.venue import StaticBooks
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

TARGET_LAST_POST_P99_MS = 200.0
TOKEN = "bench-insiders-token"
ASSET = "5034" + "9" * 72
CONDITION = "0x" + "ef" * 32


class _Router(egrpc.RouterServiceServicer):
    def __init__(self, log_: DurableLog) -> None:
        self.log = log_
        self.connected = asyncio.Event()

    async def StreamRoutedTrades(self, request, context):
        self.connected.set()

        def build(cursor: str, payload: bytes) -> epb.StreamRoutedTradesResponse:
            return epb.StreamRoutedTradesResponse(cursor=cursor, routed=epb.RoutedTrade.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


def _routed(run: int, n: int, now_ns: int) -> epb.RoutedTrade:
    """As the router writes it: the shared fields once, in ``common``."""
    common = epb.Order(
        origin=epb.ORDER_ORIGIN_COPY, asset_id=ASSET, condition_id=CONDITION, outcome="Yes", side=cpb.SIDE_BUY,
        order_type=epb.ORDER_TYPE_FAK, reference_price="0.50", tick_size="0.01", min_order_size="5",
        leader_trade_id=f"lt_bench_{run}", leader_tx_hash="0x" + "ab" * 32, leader_venue_time_ms=now_ns // 1_000_000,
        received_time_ns=now_ns, routed_time_ns=now_ns)
    orders = [epb.Order(
        client_order_id=f"co_bench_{run:03d}_{i:05d}", subscription_id=f"sub_{i:05d}", follower_user_id=f"u_{i}",
        follower_wallet_id=f"w_{i:05d}", follower_proxy="0x" + f"{i:040x}", amount_usd="10", max_slippage_bps=200,
        mode=cpb.EXECUTION_MODE_LIVE)
        for i in range(n)]
    return epb.RoutedTrade(common=common, orders=orders)


class _CpuSampler:
    """Samples a process's CPU clock (``clock_gettime`` on its CPU clock id: ns, not 10 ms ticks) every
    ``interval_s`` in a thread, so the CPU used up to a given instant can be read afterwards."""

    def __init__(self, pid: int, interval_s: float = 0.002) -> None:
        self.clock = (~pid << 3) | 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
        self.interval_s = interval_s
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def now_ns(self) -> int:
        """The process's CPU time so far."""
        return time.clock_gettime_ns(self.clock)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append((time.time_ns(), self.now_ns()))
            except OSError:
                return
            if len(self.samples) > 100_000:
                del self.samples[:50_000]

    def at(self, wall_ns: int) -> int:
        """CPU time at the first sample taken at or after ``wall_ns`` (the latest sample if none is)."""
        for t, cpu in self.samples:
            if t >= wall_ns:
                return cpu
        return self.samples[-1][1] if self.samples else self.now_ns()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=1)


def _terminal_count(db_url: str, prefix: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE client_order_id LIKE %s AND terminal_at IS NOT NULL",
                           (prefix + "%",)).fetchone()
        return int(row[0]) if row else 0


def _load() -> float:
    return os.getloadavg()[0]


class _Stack:
    """The executor subprocess with its router stand-in and Insiders fake (see the module docstring)."""

    def __init__(self, db_url: str, redis_url: str, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.db_url = db_url
        self.redis_url = redis_url
        self.log_path = log_path
        self.extra_env = extra_env or {}

    async def __aenter__(self) -> _Stack:
        books = StaticBooks()
        books.set(ASSET, bids=[("0.49", "100000000")], asks=[("0.50", "100000000"), ("0.51", "100000000")])
        self.fake = InsidersFake(books, token=TOKEN, settle_s=0.05)
        await self.fake.start()
        self.redis = create_redis(self.redis_url)
        b, a = books.levels(ASSET)
        now_ms = int(time.time() * 1000)
        await write_book(self.redis, BookSnapshot(ASSET, CONDITION, tuple(b), tuple(a), Decimal("0.01"), now_ms,
                                                  now_ms + 3_600_000))
        self.stream_redis = create_stream_redis(self.redis_url)
        self.log = DurableLog(self.stream_redis, ROUTED_TRADES)
        self.router = _Router(self.log)
        self.srv: GrpcServer = await start_server("127.0.0.1", 0, lambda s: (
            egrpc.add_RouterServiceServicer_to_server(self.router, s), ["tradingtools.execution.v1.RouterService"])[1],
            security=internal_security())
        env = {**os.environ, **internal_env(), "DATABASE_URL": self.db_url, "REDIS_URL": self.redis_url,
               "TT_EXECUTOR_GRPC_PORT": "0",
               "TT_ROUTER_GRPC_TARGET": f"127.0.0.1:{self.srv.port}", "TT_INSIDERS_API_URL": self.fake.url,
               "TT_INSIDERS_API_TOKEN": TOKEN, "TT_TUNE_EXECUTOR_MAX_ORDER_AGE_S": "0", **self.extra_env}
        env.setdefault("MALLOC_TRIM_THRESHOLD_", "268435456")
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.executor",
                                                         cwd=project_root(), env=env,
                                                         stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
        self.sampler = _CpuSampler(self.proc.pid)
        try:
            await asyncio.wait_for(self._ready(), timeout=60)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _ready(self) -> None:
        """The executor reads routed trades (through the router stand-in, or from the log directly)."""
        while not self.router.connected.is_set():
            if b'"executor started"' in self.log_path.read_bytes():
                return
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        self.sampler.stop()
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
        await self.srv.stop(0)
        await self.fake.stop()
        await self.redis.aclose()
        await self.stream_redis.aclose()

    async def wait_terminal(self, prefix: str, n: int, timeout_s: float = 60.0) -> None:
        """Wait until ``n`` orders whose id starts with ``prefix`` are terminal."""
        deadline = time.monotonic() + timeout_s
        while await asyncio.to_thread(_terminal_count, self.db_url, prefix) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{prefix}: orders did not all end")
            await asyncio.sleep(0.1)


async def _fanout(args: argparse.Namespace, db_url: str, redis_url: str, log_path: Path) -> dict[str, Any]:
    last_ms: list[float] = []
    first_ms: list[float] = []
    cpu_ms: list[float] = []
    async with _Stack(db_url, redis_url, log_path) as st:
        fake, sampler = st.fake, st.sampler
        for run in range(args.warmup + args.runs):
            start_index = len(fake.posts)
            cpu0 = sampler.now_ns()
            t0 = time.time_ns()
            routed = _routed(run, args.orders, t0)
            for part in split_routed(routed, routed.SerializeToString()):  # as the router appends a wide fan-out
                await st.log.append(part)
            deadline = time.monotonic() + 30
            while len(fake.posts) - start_index < args.orders:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run}: only {len(fake.posts) - start_index} POSTs arrived")
                await asyncio.sleep(0.02)
            arrivals = sorted(p.arrival_ns for p in fake.posts[start_index:])
            if arrivals[0] < t0:
                raise AssertionError(f"run {run}: a POST arrived before the trade was appended")
            await asyncio.sleep(0.01)  # a sample after the last arrival
            cpu = (sampler.at(arrivals[-1]) - cpu0) / 1e6  # executor CPU from the append to the last POST
            if run >= args.warmup:
                last_ms.append((arrivals[-1] - t0) / 1e6)
                first_ms.append((arrivals[0] - t0) / 1e6)
                cpu_ms.append(cpu)
                print(f"run {run - args.warmup + 1:>3}: first POST {first_ms[-1]:7.1f} ms, "
                      f"last POST {last_ms[-1]:7.1f} ms, executor CPU meanwhile {cpu:6.1f} ms", flush=True)
            await st.wait_terminal(f"co_bench_{run:03d}_", args.orders)
            await asyncio.sleep(0.3)
        counts = fake.post_counts()
        doubles = sum(1 for n in counts.values() if n > 1)
    return {"last_post": summarize(last_ms), "first_post": summarize(first_ms),
            "executor_cpu_to_last_post": summarize(cpu_ms), "runs_last_ms": last_ms,
            "orders_per_run": args.orders, "double_posts": doubles}


def _single(i: int, now_ns: int) -> epb.RoutedTrade:
    o = expand(_routed(0, 1, now_ns)).orders[0]
    o.client_order_id = f"co_single_{i:06d}"
    o.leader_trade_id = f"lt_single_{i}"
    o.subscription_id = "sub_single"
    o.follower_wallet_id = "w_single"
    return epb.RoutedTrade(orders=[o])


async def _singles(args: argparse.Namespace, db_url: str, redis_url: str, log_path: Path,
                   pgdata: Path, run_dir: Path) -> dict[str, Any]:
    """``--single-rate`` RoutedTrades of one order per second for ``--single-s``: executor (and PostgreSQL)
    CPU per order, from the first append until every order is terminal, and the executor's statements."""
    log_statements(db_url)
    pg_log = pgdata / "log"
    async with _Stack(db_url, redis_url, log_path, {}) as st:
        n_warm = max(1, int(args.single_rate))
        for i in range(n_warm):  # one second of warm-up
            await st.log.append(_single(i, time.time_ns()).SerializeToString())
            await asyncio.sleep(1 / args.single_rate)
        await st.wait_terminal("co_single_", n_warm)
        await asyncio.sleep(0.5)
        log_start = pg_log.stat().st_size
        pg_pids = storage_pids(run_dir)["postgres"]
        pg_begin = {pid: process_cpu_s(pid) or 0.0 for pid in pg_pids}
        cpu0 = st.sampler.now_ns()
        n = int(args.single_rate * args.single_s)
        t0 = time.monotonic()
        for k in range(n):
            delay = t0 + k / args.single_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await st.log.append(_single(n_warm + k, time.time_ns()).SerializeToString())
        drive_s = time.monotonic() - t0
        cpu_drive = (st.sampler.now_ns() - cpu0) / 1e6
        await st.wait_terminal("co_single_", n_warm + n, timeout_s=120)
        await asyncio.sleep(0.3)  # the outbox marks follow within 0.1 s
        cpu_all = (st.sampler.now_ns() - cpu0) / 1e6
        pg_cpu = sum((process_cpu_s(pid) or 0.0) - pg_begin.get(pid, 0.0)
                     for pid in storage_pids(run_dir)["postgres"]) * 1e3
        statements, transactions, kinds = count_statements(pg_log, log_start)
        posts = sum(1 for p in st.fake.posts if p.client_order_id.startswith("co_single_"))
        doubles = sum(1 for c, k in st.fake.post_counts().items() if k > 1 and c.startswith("co_single_"))
    return {"rate_per_s": args.single_rate, "orders": n, "drive_s": round(drive_s, 2),
            "executor_cpu_ms_per_order": round(cpu_all / n, 3),
            "executor_cpu_ms_per_order_while_driving": round(cpu_drive / n, 3),
            "postgres_cpu_ms_per_order": round(pg_cpu / n, 3),
            "pg_statements_per_order": round(statements / n, 2),
            "pg_transactions_per_order": round(transactions / n, 2),
            "posts": posts, "double_posts": doubles,
            "pg_statements_by_kind": {k: round(v / n, 2) for k, v in kinds.items()}}


def main(argv: list[str]) -> int:
    """Run the benchmark; non-zero when the p99 target is missed."""
    parser = argparse.ArgumentParser(prog="bench executor")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--transport-runs", type=int, default=3)
    parser.add_argument("--no-transports", action="store_true")
    parser.add_argument("--single-rate", type=float, default=0.0,
                        help="also (or, with --single-only, only) send one-order RoutedTrades at this rate")
    parser.add_argument("--single-s", type=float, default=10.0)
    parser.add_argument("--single-only", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args, _ = parser.parse_known_args(argv)
    import uvloop

    result: dict[str, Any] = {}
    transports: dict[str, Any] = {}
    singles: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tt-bench-executor-") as tmp:
        pgdata = Path(tmp) / "pg"
        db_url = start_postgres(pgdata)
        redis_url, redis_pid = start_redis(Path(tmp) / "redis", durable=False)
        log_path = Path(tmp) / "executor.log"
        try:
            apply_migrations(db_url)
            if not args.single_only:
                result = uvloop.run(_fanout(args, db_url, redis_url, log_path))
                if not args.no_transports:
                    transports = uvloop.run(compare_transports(args.orders, args.transport_runs, TOKEN, ASSET))
            if args.single_rate > 0:
                singles = uvloop.run(_singles(args, db_url, redis_url, log_path, pgdata, Path(tmp)))
        except BaseException:
            if log_path.exists():
                print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            stop_pid(redis_pid)
            stop_postgres(pgdata)
    ok = True
    if result:
        print(f"executor: one RoutedTrade of {args.orders} orders appended -> POSTs received by the Insiders fake "
              f"({args.runs} runs)")
        rows = {"last POST": result["last_post"], "first POST": result["first_post"],
                "executor CPU (ms)": result["executor_cpu_to_last_post"]}
        rows.update({f"{k} {args.orders} POSTs": v for k, v in transports.items()})
        print_table(rows)
        ok = result["last_post"]["p99_ms"] <= TARGET_LAST_POST_P99_MS and result["double_posts"] == 0
        print(f"target: last POST p99 <= {TARGET_LAST_POST_P99_MS:g} ms, no double POST: {'met' if ok else 'MISSED'}")
    if singles:
        print("single-order RoutedTrades: " + ", ".join(f"{k} {v}" for k, v in singles.items()))
        ok = ok and singles["double_posts"] == 0 and singles["posts"] >= singles["orders"]
    if not args.no_save:
        path = save_results("executor", {"what": "RoutedTrade appended -> order POSTs received by the Insiders fake",
                                         "load_average_1m_after": round(_load(), 2),
                                         "transport": "common.http1", **result,
                                         "transports_alone": transports, "single_orders": singles},
                            baseline=not args.single_only)
        print(f"saved {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
