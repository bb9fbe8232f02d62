"""A leader trade that comes without a condition id is capped in its market, known from the token's market info,
with the wallet's positions and BUYs in flight of that market (real PostgreSQL and Redis): the per-market exposure
cap (``maxMarketExposureUsd``) is the follower's in one market, however the leader's trades were reported."""

from __future__ import annotations

import time
from decimal import Decimal

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex, reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.routed import parse_routed
from common.storage import create_pool
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.router.adapters.balances import NoBalances
from services.router.adapters.markets import ClobMarketInfo, MarketInfoCache
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RouterStore
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.metrics import RouterMetrics
from services.router.outbox import Emitter
from services.router.router import Knobs, Router
from tests.router.conftest import BOOK, COND, MARKET, YES, leader_trade, route_on_redis, subscription
from tests.router.fakes import FakeHttp
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration
D = Decimal
CAPPED = spb.Risk(max_market_exposure_usd="100")


async def _route_buy_without_condition(r: aioredis.Redis, redis_url: str, db_url: str) -> list[tuple[str, str]]:
    """w_1 (fixed $25, market cap $100) copies a leader BUY of YES reported without its condition id; the
    (amount, skip reason) of what was routed for it."""
    now_ns = time.time_ns()
    await hotindex.upsert(r, subscription("sub_1", "w_1", risk=CAPPED))
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    ev = leader_trade("lt_nocond")
    ev.condition_id = ""
    ev.received_time_ns, ev.venue_time_ms = now_ns, now_ns // 1_000_000 - 1500
    [routed] = await route_on_redis(r, redis_url, db_url, [ev], now_ns=now_ns, batched=False)
    return [(o.amount_usd, "") for o in routed.orders] + [("", s.reason) for s in routed.skips]


async def test_a_position_held_in_the_market_counts_against_a_trade_without_condition_id(
        db_url: str, redis_url: str, r: aioredis.Redis) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:  # $90 of the market at cost, through the same token
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_1', %s, %s, '0xa', 225, 0.4, 90)", (YES, COND))
    assert await _route_buy_without_condition(r, redis_url, db_url) == [("10", "")]  # cut to the $10 headroom


@pytest.mark.parametrize("key", [COND, YES], ids=["market", "token"])  # token: routed before copies carried the market
async def test_a_buy_in_flight_in_the_market_counts_against_a_trade_without_condition_id(
        db_url: str, redis_url: str, r: aioredis.Redis, key: str) -> None:
    assert await reservations.reserve(r, [reservations.Reservation(  # a copy BUY of the market, reserved under key
        "co_before", "w_1", reservations.USD, key, 100_000_000, "lt_before")]) == [True]
    assert await _route_buy_without_condition(r, redis_url, db_url) == [("", "MARKET_EXPOSURE_LIMIT")]


def _hold(db_url: str, condition_id: str, cost: int = 90) -> None:
    """w_1 holds YES at ``cost`` USD, booked under ``condition_id`` ("": opened by a copy of a trade that came
    without one, before its copies carried their market)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_1', %s, %s, '0xa', %s, 0.4, %s)", (YES, condition_id, cost * 5 // 2, cost))


async def _cached_market(r: aioredis.Redis, now_ns: int, risk: spb.Risk = CAPPED) -> None:
    await hotindex.upsert(r, subscription("sub_1", "w_1", risk=risk))
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")


def _trade(tid: str, now_ns: int, condition_id: str = "") -> mpb.LeaderTradeEvent:
    ev = leader_trade(tid)
    ev.condition_id = condition_id
    ev.received_time_ns, ev.venue_time_ms = now_ns, now_ns // 1_000_000 - 1500
    return ev


def _outcome(routed: epb.RoutedTrade) -> list[tuple[str, str]]:
    return [(o.amount_usd, "") for o in routed.orders] + [("", s.reason) for s in routed.skips]


async def test_a_market_held_is_open_already_for_a_trade_without_condition_id(
        db_url: str, redis_url: str, r: aioredis.Redis) -> None:
    now_ns = time.time_ns()
    _hold(db_url, COND, cost=10)
    await _cached_market(r, now_ns, spb.Risk(max_open_positions=1))
    [routed] = await route_on_redis(r, redis_url, db_url, [_trade("lt_nocond", now_ns)], now_ns=now_ns, batched=False)
    assert _outcome(routed) == [("25", "")]  # adds to the one market held: no new position opened


@pytest.mark.parametrize("batched", [False, True], ids=["one_by_one", "batched"])
async def test_copies_of_a_trade_without_condition_id_are_in_flight_in_its_market(
        db_url: str, redis_url: str, r: aioredis.Redis, batched: bool) -> None:
    now_ns = time.time_ns()
    await _cached_market(r, now_ns, spb.Risk(max_market_exposure_usd="30"))
    evs = [_trade("lt_nocond", now_ns), _trade("lt_cond", now_ns, COND)]
    first, second = await route_on_redis(r, redis_url, db_url, evs, now_ns=now_ns, batched=batched)
    assert [o.condition_id for o in first.orders] == [COND]  # the executor books its position in the market
    assert (_outcome(first), _outcome(second)) == ([("25", "")], [("5", "")])


@pytest.mark.parametrize("condition_id", ["", COND], ids=["trade_without", "trade_with"])
async def test_a_position_booked_without_condition_id_counts_in_its_market(
        db_url: str, redis_url: str, r: aioredis.Redis, condition_id: str) -> None:
    now_ns = time.time_ns()
    _hold(db_url, "")
    await _cached_market(r, now_ns)
    [routed] = await route_on_redis(r, redis_url, db_url, [_trade("lt_1", now_ns, condition_id)], now_ns=now_ns,
                                    batched=False)
    assert _outcome(routed) == [("10", "")]


async def test_a_trade_without_condition_id_of_a_market_not_cached_is_capped_in_its_market(
        db_url: str, redis_url: str, r: aioredis.Redis) -> None:
    """The market info is fetched (the CLOB's book names the market) before the positions are read."""
    now_ns = time.time_ns()
    _hold(db_url, COND)
    await hotindex.upsert(r, subscription("sub_1", "w_1", risk=CAPPED))
    http = FakeHttp()
    http.add_market(MARKET, BOOK)
    clob = await http.start()
    sr, fast = create_stream_redis(redis_url), FastRedis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    session = aiohttp.ClientSession()
    store = RouterStore(pool)
    try:
        cache = SubscriptionCache(r)
        await cache.reload_all()
        log_ = DurableLog(sr, ROUTED_TRADES)
        state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
        router = Router(followers=cache, redis_state=state, store=store,
                        markets=MarketInfoCache(r, ClobMarketInfo(session, clob, timeout_s=2), ttl_ms=3_600_000,
                                                clock_ms=lambda: now_ns // 1_000_000),
                        balances=NoBalances(), emitter=Emitter(state, store, fetch=log_.entries_from), knobs=Knobs(),
                        metrics=RouterMetrics(), clock_ns=lambda: now_ns)
        await router.handle(_trade("lt_nocond", now_ns))
        [routed] = [parse_routed(p) for _, p in await log_.read("0-0", count=10, block_ms=0)]
    finally:
        await session.close()
        await store.close()
        await pool.close()
        fast.close()
        await sr.aclose()
        await http.stop()
    assert (_outcome(routed), [o.condition_id for o in routed.orders]) == ([("10", "")], [COND])
