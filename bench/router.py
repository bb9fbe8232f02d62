"""Router routing time on real PostgreSQL and Redis (embedded, private): one leader trade handed to
``Router.handle`` → its RoutedTrade appended to the durable log (reads, decisions, the PostgreSQL
write and the Redis emit), for one follower and for a fan-out to many followers.

    python -m bench router [--samples 2000] [--fanout 1000] [--fanout-runs 20] [--batch 32] [--no-save]

``cpu_ms_per_trade`` is the router process's CPU time (``time.process_time``) inside ``Router.handle``
per one-follower trade (PostgreSQL and Redis run in their own processes and are not counted);
``batch_cpu_ms_per_trade`` and ``batch_trades_per_s`` the same for ``--samples`` one-follower trades
handed to ``Router.handle_batch`` ``--batch`` at a time (what the consumer does under load).

Market info is pre-cached (no CLOB call); positions, fills and funding exist for every follower so
the batched reads return rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import uvloop

from bench import print_table, save_results, summarize
from common import hotindex, reservations
from common.embedded import start_postgres, start_redis, stop_pid, stop_postgres
from common.fastredis import FastRedis
from common.marketstate import BookSnapshot, MarketInfo, write_market
from common.storage import apply_migrations, create_pool, create_redis
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.router.adapters.balances import NoBalances
from services.router.adapters.clob_book import BookStore
from services.router.adapters.markets import ClobMarketInfo, MarketInfoCache
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RouterStore
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.metrics import RouterMetrics
from services.router.outbox import Emitter
from services.router.router import Knobs, Router
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

ASSET = "5034" + "7" * 72
CONDITION = "0x" + "ab" * 32
# The router's share of the end-to-end budgets (frame -> POST p99 <= 10 ms for one follower; last of
# 1,000 POSTs <= 200 ms, about half of which the executor's HTTP fan-out needs).
TARGET_ONE_P99_MS = 10.0
TARGET_FANOUT_P99_MS = 100.0


def _sub(i: int, leader: str) -> spb.Subscription:
    modes = [spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25"),
             spb.Sizing(mode=spb.SIZING_MODE_PROPORTIONAL, ratio="0.05", min_order_usd="1", max_order_usd="250"),
             spb.Sizing(mode=spb.SIZING_MODE_PERCENT_OF_BALANCE, percent_of_balance="2")]
    return spb.Subscription(
        id=f"sub_{i:05d}", follower_user_id=f"u_{i}", follower_wallet_id=f"w_{i:05d}",
        follower_proxy="0x" + "6a" * 20, leader_proxy=leader, state=spb.SUBSCRIPTION_STATE_ACTIVE,
        mode=cpb.EXECUTION_MODE_PAPER, sizing=modes[i % 3],
        filters=spb.Filters(min_price="0.05", max_price="0.95", copy_sells=True, max_slippage_bps=200),
        risk=spb.Risk(max_market_exposure_usd="500", max_total_exposure_usd="2000", max_open_positions=20,
                      daily_loss_limit_usd="300"),
        perf=spb.Perf(applied_multiplier="1"))


def _event(n: int, leader: str) -> mpb.LeaderTradeEvent:
    now = time.time_ns()
    return mpb.LeaderTradeEvent(
        id=f"lt_bench_{leader[-4:]}_{n}", tx_hash="0x" + "cd" * 32, wallet=leader, asset_id=ASSET,
        condition_id=CONDITION, side=cpb.SIDE_BUY, price="0.4", size="250", notional_usd="100", outcome="Yes",
        market_slug="bench-market", event_slug="bench", activity_type=mpb.ACTIVITY_TYPE_TRADE,
        venue_time_ms=now // 1_000_000, received_time_ns=now)


def _seed(db_url: str, wallets: list[str]) -> None:
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd)"
            " VALUES (%s, '999', '0xother', '0xa', 10, 0.5, 5) ON CONFLICT DO NOTHING", [(w,) for w in wallets])
        cur.executemany("INSERT INTO funding (follower_wallet_id, balance_usd, as_of, updated_at)"
                        " VALUES (%s, 1000, now(), now()) ON CONFLICT DO NOTHING", [(w,) for w in wallets])


async def _run(args: argparse.Namespace, db_url: str, redis_url: str) -> dict[str, Any]:
    redis = create_redis(redis_url)
    pool = await create_pool(db_url, min_size=2, max_size=8, autocommit=True)
    await pool.wait()
    session = aiohttp.ClientSession()
    one, many = "0x" + "01" * 20, "0x" + "02" * 20
    subs = [_sub(0, one)] + [_sub(i, many) for i in range(1, args.fanout + 1)]
    for sub in subs:
        await hotindex.upsert(redis, sub)
    await asyncio.to_thread(_seed, db_url, [s.follower_wallet_id for s in subs])
    now_ms = time.time_ns() // 1_000_000
    await write_market(redis, MarketInfo(ASSET, CONDITION, Decimal("0.01"), Decimal("5"), updated_ms=now_ms))
    # a stored book, as ingest keeps for watched assets: without one every trade would fetch it first
    await BookStore(redis).store_if_newer(BookSnapshot(
        ASSET, CONDITION, ((Decimal("0.39"), Decimal("5000")),), ((Decimal("0.41"), Decimal("5000")),),
        Decimal("0.01"), now_ms, now_ms))
    cache = SubscriptionCache(redis)
    await cache.reload_all()
    stream_redis = create_stream_redis(redis_url)
    redis_log = DurableLog(stream_redis, ROUTED_TRADES)
    last = ["0-0"]
    fast = FastRedis(redis_url)
    redis_state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=100_000)
    store = RouterStore(pool)
    metrics = RouterMetrics()
    router = Router(followers=cache, redis_state=redis_state, store=store,
                    markets=MarketInfoCache(redis, ClobMarketInfo(session, "http://127.0.0.1:9", timeout_s=0.1),
                                            ttl_ms=3_600_000, clock_ms=lambda: time.time_ns() // 1_000_000),
                    balances=NoBalances(), emitter=Emitter(redis_state, store), knobs=Knobs(), metrics=metrics)

    cpu = [0.0]

    async def timed(ev: mpb.LeaderTradeEvent) -> float:
        started, cpu0 = time.perf_counter(), time.process_time()
        await router.handle(ev)
        elapsed = (time.perf_counter() - started) * 1e3
        cpu[0] += time.process_time() - cpu0
        # the executor releases each order's reservation when it ends; do the same, off the clock
        for _cursor, payload in await redis_log.read(last[0], count=10, block_ms=0):
            last[0] = _cursor
            for order in epb.RoutedTrade.FromString(payload).orders:
                await reservations.release(redis, order.client_order_id)
        return elapsed

    gc.collect()  # as ``python -m services.router`` does once serving
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    for i in range(50):  # warm-up: connections, prepared statements, scripts
        await timed(_event(-1 - i, one))
    cpu[0] = 0.0
    one_ms = [await timed(_event(i, one)) for i in range(args.samples)]
    cpu_ms_per_trade = round(cpu[0] * 1e3 / max(1, args.samples), 3)
    batch_cpu, batch_wall, n_batched = 0.0, 0.0, 0
    for b in range(args.samples // args.batch):
        evs = [_event(100_000 + b * args.batch + i, one) for i in range(args.batch)]
        started, cpu0 = time.perf_counter(), time.process_time()
        await router.handle_batch(evs)
        batch_wall += time.perf_counter() - started
        batch_cpu += time.process_time() - cpu0
        n_batched += len(evs)
        for _cursor, payload in await redis_log.read(last[0], count=10_000, block_ms=0):
            last[0] = _cursor
            for order in epb.RoutedTrade.FromString(payload).orders:
                await reservations.release(redis, order.client_order_id)
    await timed(_event(-1, many))
    cpu[0] = 0.0
    fan_ms = [await timed(_event(i, many)) for i in range(args.fanout_runs)]
    fan_cpu_ms = round(cpu[0] * 1e3 / max(1, args.fanout_runs), 2)
    orders = metrics.counts["orders"]
    fast.close()
    await session.close()
    await store.close()
    await pool.close()
    await redis.aclose()
    await stream_redis.aclose()
    return {"one_follower": summarize(one_ms), f"fanout_{args.fanout}": summarize(fan_ms), "orders": orders,
            "cpu_ms_per_trade": cpu_ms_per_trade, "fanout_cpu_ms_per_trade": fan_cpu_ms, "batch": args.batch,
            "batch_cpu_ms_per_trade": round(batch_cpu * 1e3 / max(1, n_batched), 3),
            "batch_trades_per_s": round(n_batched / batch_wall) if batch_wall else 0}


def main(argv: list[str]) -> int:
    """Run the benchmark; non-zero when a p99 target is missed."""
    parser = argparse.ArgumentParser(prog="bench router")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--fanout", type=int, default=1000)
    parser.add_argument("--fanout-runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="trades per handle_batch call")
    parser.add_argument("--no-save", action="store_true", help="print only, write no result file")
    args, _ = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="tt-bench-router-") as tmp:
        pgdata = Path(tmp) / "pg"
        db_url = start_postgres(pgdata)
        redis_url, redis_pid = start_redis(Path(tmp) / "redis", durable=False)
        try:
            apply_migrations(db_url)
            result = uvloop.run(_run(args, db_url, redis_url))  # the services run on uvloop too
        finally:
            stop_pid(redis_pid)
            stop_postgres(pgdata)
    rows = {"one follower": result["one_follower"], f"fan-out {args.fanout}": result[f"fanout_{args.fanout}"]}
    load1, load5, _ = os.getloadavg()
    result["loadavg_1m_5m"] = [round(load1, 2), round(load5, 2)]
    print(f"router: leader trade handed to the router -> RoutedTrade appended (load average {load1:.2f})")
    print_table(rows)
    print(f"cpu_ms_per_trade (one follower, one trade per handle): {result['cpu_ms_per_trade']}")
    print(f"fanout_cpu_ms_per_trade: {result['fanout_cpu_ms_per_trade']}")
    print(f"batch_cpu_ms_per_trade (one follower, {args.batch} trades per handle_batch):"
          f" {result['batch_cpu_ms_per_trade']}, batch_trades_per_s: {result['batch_trades_per_s']}")
    if not args.no_save:
        path = save_results("router", {"what": "Router.handle: trade in -> RoutedTrade appended", **result})
        print(f"saved {path}")
    ok = (result["one_follower"]["p99_ms"] <= TARGET_ONE_P99_MS
          and result[f"fanout_{args.fanout}"]["p99_ms"] <= TARGET_FANOUT_P99_MS)
    print(f"targets: one follower p99 <= {TARGET_ONE_P99_MS} ms, fan-out p99 <= {TARGET_FANOUT_P99_MS} ms:"
          f" {'met' if ok else 'MISSED'}")
    return 0 if ok else 1
