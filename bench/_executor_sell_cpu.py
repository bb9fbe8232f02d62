"""Executor CPU per exit SELL (guard's SubmitOrder) and per copy BUY (routed), the executor in its own process.

    python -m bench._executor_sell_cpu [--trees DIR[,DIR...]] [--rounds 2] [--n 300]
                                       [--modes spaced:100,seq,burst,buy:100] [--profile PREFIX]

Embedded PostgreSQL and Redis, the Insiders fake in this process, a router and an ingest stand-in; ``--n``
wallets each hold a position in an asset of its own (a fresh, fresh-forever book each). Each mode first makes
every position 10 shares; each SELL sells a position's 10 shares (it empties the position, as a stop-loss does),
built as guard builds it (origin TRIGGER, size, no limit) and sent through ``SubmitOrder``:

* ``spaced``: one every 100 ms, not waiting for the answers (bench pipeline (e)'s crossings come this way);
* ``seq``: one after another, each sent once the previous one answered;
* ``burst``: all at once (a crash's stop-losses);
* ``buy``: copy BUYs routed one at a time, each waited for until it ended.

This process follows the order events as guard does (``StreamOrderEventBatches``) until every order of the mode
ended. Executor CPU is its process CPU clock from the first send to 0.3 s after the last end; ``net`` takes off
the executor's idle rate, read over the 2 s before. Each tree of ``--trees`` (a checkout, or a copy of one:
``services``, ``common``, ``tradingtools``, ``sim``) runs its own executor, the trees alternating round by round
on one stack, so that "before" and "after" share the machine's phase. ``--profile PREFIX`` runs the executor
under cProfile (the thread's CPU clock) and writes PREFIX.<tree>.r<round>.<k>{.base,} around each mode: the
difference of the two is the mode's profile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench import internal_env, internal_security
from bench.executor import _CpuSampler
from common.config import project_root
from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres
from common.grpcclient import channel as grpc_channel
from common.grpcserver import start_server
from common.marketstate import BookSnapshot, write_book
from common.storage import apply_migrations, create_redis
from common.streams import MARKET_RESOLUTIONS, ROUTED_TRADES, DurableLog, create_stream_redis, serve_log
from sim.insiders import InsidersFake
from sim.venue import StaticBooks
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

TOKEN = "bench-insiders-token"
TERMINAL = {epb.ORDER_EVENT_TYPE_FILLED, epb.ORDER_EVENT_TYPE_CANCELLED, epb.ORDER_EVENT_TYPE_REJECTED,
            epb.ORDER_EVENT_TYPE_LOST, epb.ORDER_EVENT_TYPE_FAILED}
PROFILE_START, PROFILE_DUMP = signal.SIGRTMIN + 1, signal.SIGRTMIN + 2  # SIGUSR1 is the executor's task dump

# The executor's entry point under an always-on cProfile (enabling it from a signal handler would not reach the
# running event loop): one signal dumps the counts so far as the base, the other as the end.
_PROFILED = f"""
import cProfile, marshal, os, signal, sys, time
prof = cProfile.Profile(time.thread_time_ns, 1e-9)
n = [0]
def dump(suffix):
    prof.snapshot_stats()
    with open(os.environ["PROF_OUT"] + "." + str(n[0]) + suffix, "wb") as f:
        marshal.dump(prof.stats, f)
def base(_s, _f):
    dump(".base")
def end(_s, _f):
    dump("")
    n[0] += 1
signal.signal({int(PROFILE_START)}, base)
signal.signal({int(PROFILE_DUMP)}, end)
prof.enable()
from services.executor.__main__ import cli
sys.exit(cli())
"""


def _asset(i: int) -> str:
    return f"{7000 + i}" + "3" * 72


def _condition(i: int) -> str:
    return "0x" + f"{i:064x}"


class _Router(egrpc.RouterServiceServicer):
    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamRoutedTrades(self, request, context):
        def build(cursor: str, payload: bytes) -> epb.StreamRoutedTradesResponse:
            return epb.StreamRoutedTradesResponse(cursor=cursor, routed=epb.RoutedTrade.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


class _Ingest(mgrpc.IngestServiceServicer):
    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamMarketResolutions(self, request, context):
        def build(cursor: str, payload: bytes) -> mpb.StreamMarketResolutionsResponse:
            return mpb.StreamMarketResolutionsResponse(cursor=cursor,
                                                       resolution=mpb.MarketResolution.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


class _Stack:
    """Storage, the fake, the stand-ins; one executor at a time (:meth:`start_executor`)."""

    def __init__(self, tmp: Path, positions: int) -> None:
        self.tmp = tmp
        self.positions = positions
        self.cursor = "0"  # of the order-event stream, kept across executors
        self.ended: dict[str, epb.OrderEvent] = {}

    async def start(self) -> None:
        self.db_url = start_postgres(self.tmp / "pg")
        self.redis_url, self.redis_pid = start_redis(self.tmp / "redis", durable=False)
        apply_migrations(self.db_url)
        self.books = StaticBooks()
        self.fake = InsidersFake(self.books, token=TOKEN, settle_s=0.05)
        await self.fake.start()
        self.redis = create_redis(self.redis_url)
        now_ms = int(time.time() * 1000)
        for i in range(self.positions):
            self.books.set(_asset(i), bids=[("0.49", "100000000")], asks=[("0.50", "100000000")])
            b, a = self.books.levels(_asset(i))
            await write_book(self.redis, BookSnapshot(_asset(i), _condition(i), tuple(b), tuple(a), Decimal("0.01"),
                                                      now_ms, now_ms + 3_600_000))
        with psycopg.connect(self.db_url) as conn:
            for i in range(self.positions):
                conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size,"
                             " avg_price, cost_usd, subscription_id) VALUES (%s, %s, %s, %s, 10, 0.4, 4, %s)",
                             (f"w_{i:05d}", _asset(i), _condition(i), "0x" + f"{i:040x}", f"sub_{i:05d}"))
        self.sredis = create_stream_redis(self.redis_url)
        self.routed = DurableLog(self.sredis, ROUTED_TRADES)
        sec = internal_security()
        self.router = await start_server("127.0.0.1", 0, lambda s: (
            egrpc.add_RouterServiceServicer_to_server(_Router(self.routed), s),
            ["tradingtools.execution.v1.RouterService"])[1], security=sec)
        self.ingest = await start_server("127.0.0.1", 0, lambda s: (
            mgrpc.add_IngestServiceServicer_to_server(_Ingest(DurableLog(self.sredis, MARKET_RESOLUTIONS)), s),
            ["tradingtools.market.v1.IngestService"])[1], security=sec)

    async def start_executor(self, tree: str, profile: str | None) -> None:
        log_path = self.tmp / f"executor-{uuid.uuid4().hex[:6]}.log"
        env = {**os.environ, **internal_env(), "DATABASE_URL": self.db_url, "REDIS_URL": self.redis_url,
               "TT_EXECUTOR_GRPC_PORT": "0", "TT_ROUTER_GRPC_TARGET": f"127.0.0.1:{self.router.port}",
               "TT_INGEST_GRPC_TARGET": f"127.0.0.1:{self.ingest.port}", "TT_INSIDERS_API_URL": self.fake.url,
               "TT_INSIDERS_API_TOKEN": TOKEN, "PYTHONPATH": tree, "MALLOC_TRIM_THRESHOLD_": "268435456",
               "TT_RECONCILE_INTERVAL_S": "0"}  # its rounds would correct the positions this bench writes
        args = ["-c", _PROFILED] if profile else ["-m", "services.executor"]
        if profile:
            env["PROF_OUT"] = profile
        self.proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=tree, env=env,
                                                         stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            for line in log_path.read_bytes().splitlines():
                if b'"executor started"' in line:
                    port = json.loads(line)["port"]
            if port is None:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise RuntimeError(log_path.read_text()[-3000:])
                await asyncio.sleep(0.05)
        self.sampler = _CpuSampler(self.proc.pid)
        self.channel = grpc_channel(f"127.0.0.1:{port}", internal_security())
        self.stub = egrpc.ExecutorServiceStub(self.channel)
        self.consumer = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        request = epb.StreamOrderEventBatchesRequest(after_cursor=self.cursor, consumer="bench-guard")
        async for resp in self.stub.StreamOrderEventBatches(request):
            for entry in resp.entries:
                self.cursor = entry.cursor
                if entry.event.type in TERMINAL:
                    self.ended[entry.event.client_order_id] = entry.event

    async def stop_executor(self) -> None:
        self.consumer.cancel()
        self.sampler.stop()
        await self.channel.close(None)
        self.proc.terminate()
        await asyncio.wait_for(self.proc.wait(), 30)

    async def stop(self) -> None:
        await self.router.stop(0)
        await self.ingest.stop(0)
        await self.fake.stop()
        await self.redis.aclose()
        await self.sredis.aclose()
        stop_pid(self.redis_pid)
        stop_postgres(self.tmp / "pg")


def _sell(i: int, tag: str) -> epb.Order:
    now = time.time_ns()
    return epb.Order(
        client_order_id="co_" + uuid.uuid4().hex, origin=epb.ORDER_ORIGIN_TRIGGER, subscription_id=f"sub_{i:05d}",
        follower_user_id=f"u_{i}", follower_wallet_id=f"w_{i:05d}", follower_proxy="0x" + f"{i:040x}",
        asset_id=_asset(i), condition_id=_condition(i), side=cpb.SIDE_SELL, order_type=epb.ORDER_TYPE_FAK,
        size="10", reference_price="0.49", max_slippage_bps=300, tick_size="0.01", min_order_size="5",
        mode=cpb.EXECUTION_MODE_LIVE, trigger_id=f"trg_{tag}_{i}", received_time_ns=now - 1_000_000,
        routed_time_ns=now)


def _buy(i: int, tag: str) -> epb.Order:
    now = time.time_ns()
    return epb.Order(
        client_order_id=f"co_buy_{tag}_{i:05d}", origin=epb.ORDER_ORIGIN_COPY, subscription_id=f"sub_{i:05d}",
        follower_user_id=f"u_{i}", follower_wallet_id=f"w_{i:05d}", follower_proxy="0x" + f"{i:040x}",
        asset_id=_asset(i), condition_id=_condition(i), outcome="Yes", side=cpb.SIDE_BUY,
        order_type=epb.ORDER_TYPE_FAK, amount_usd="10", reference_price="0.50", max_slippage_bps=200,
        tick_size="0.01", min_order_size="5", mode=cpb.EXECUTION_MODE_LIVE, leader_trade_id=f"lt_{tag}_{i}",
        leader_tx_hash="0x" + "a" * 64, leader_venue_time_ms=now // 1_000_000, received_time_ns=now,
        routed_time_ns=now)


async def _ended(st: _Stack, ids: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(c in st.ended for c in ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(c not in st.ended for c in ids)} orders did not end")
        await asyncio.sleep(0.02)


async def _send(st: _Stack, mode: str, n: int, tag: str, lat: list[float]) -> list[str]:
    async def submit(o: epb.Order) -> None:
        start = time.monotonic()
        await st.stub.SubmitOrder(epb.SubmitOrderRequest(order=o), timeout=60)
        lat.append((time.monotonic() - start) * 1e3)

    if mode == "buy":
        ids = []
        for i in range(n):
            o = _buy(i, tag)
            start = time.monotonic()
            await st.routed.append(epb.RoutedTrade(orders=[o]).SerializeToString())
            await _ended(st, [o.client_order_id], 30)
            lat.append((time.monotonic() - start) * 1e3)
            ids.append(o.client_order_id)
        return ids
    orders = [_sell(i, tag) for i in range(n)]
    if mode == "seq":
        for o in orders:
            await submit(o)
    elif mode == "burst":
        await asyncio.gather(*(submit(o) for o in orders))
    else:  # spaced
        calls = []
        for o in orders:
            calls.append(asyncio.create_task(submit(o)))
            await asyncio.sleep(0.1)
        await asyncio.gather(*calls)
    return [o.client_order_id for o in orders]


async def _run_mode(st: _Stack, mode: str, n: int, tag: str, profiled: bool) -> dict[str, Any]:
    with psycopg.connect(st.db_url) as conn:
        conn.execute("UPDATE positions SET size = 10, cost_usd = 4")
    c0, t0 = st.sampler.now_ns(), time.monotonic()
    await asyncio.sleep(2.0)
    idle = (st.sampler.now_ns() - c0) / (time.monotonic() - t0)  # CPU ns a second
    if profiled:
        os.kill(st.proc.pid, PROFILE_START)
    c0, t0 = st.sampler.now_ns(), time.monotonic()
    lat: list[float] = []
    ids = await _send(st, mode, n, tag, lat)
    await _ended(st, ids)
    await asyncio.sleep(0.3)
    cpu, wall = st.sampler.now_ns() - c0, time.monotonic() - t0
    if profiled:
        os.kill(st.proc.pid, PROFILE_DUMP)
        await asyncio.sleep(0.5)
    lat.sort()
    return {"mode": mode, "n": n, "filled": sum(st.ended[c].type == epb.ORDER_EVENT_TYPE_FILLED for c in ids),
            "cpu_ms_per": round(cpu / n / 1e6, 3), "cpu_net_ms_per": round((cpu - idle * wall) / n / 1e6, 3),
            "idle_cpu_ms_per_s": round(idle / 1e6, 2), "wall_s": round(wall, 2),
            "latency_p50_ms": round(lat[len(lat) // 2], 2), "latency_p90_ms": round(lat[int(len(lat) * 0.9)], 2)}


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="tt-bench-sell-cpu-"))
    results: list[dict[str, Any]] = []
    st = _Stack(tmp, args.n)
    try:
        await st.start()
        k = 0
        for rnd in range(args.rounds):
            for t, tree in enumerate(args.trees.split(",")):
                profile = f"{args.profile}.t{t}.r{rnd}" if args.profile else None
                await st.start_executor(tree, profile)
                try:
                    await _run_mode(st, "seq", 20, f"w{k}", False)  # warm-up
                    for spec in args.modes.split(","):
                        mode, _, count = spec.partition(":")
                        k += 1
                        r = await _run_mode(st, mode, min(int(count or args.n), args.n), f"m{k}", bool(profile))
                        r.update(tree=tree, round=rnd)
                        results.append(r)
                        print(json.dumps(r), flush=True)
                finally:
                    await st.stop_executor()
    finally:
        await st.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main(argv: list[str]) -> int:
    """Run; prints one JSON line per tree, round and mode."""
    parser = argparse.ArgumentParser(prog="bench._executor_sell_cpu")
    parser.add_argument("--trees", default=str(project_root()))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--modes", default="spaced:100,seq,burst,buy:100")
    parser.add_argument("--profile", default="")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
