"""A batch of leader trades decides exactly as the same trades routed one by one (real PostgreSQL and
Redis): reservations, exposure, open positions and the leader's position carry from trade to trade,
including caps that bind mid-batch, a BUY then SELLs of the same asset, a duplicate and an invalid
trade, and the trades after one that must be finished alone (a client order id claimed before, a
decision persisted but never appended, a trade appended but never persisted)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex, reservations
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.storage import create_pool
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RouterStore
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.domain.decide import client_order_id
from services.router.inbound import parse_trade
from services.router.outbound import routed_row
from services.router.router import Router
from tests.router.conftest import COND, LEADER, YES, leader_trade, persisted_orders, redis_markets_router, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

D = Decimal
ASSET2, COND2 = "7777" + "2" * 70, "0x" + "c2" * 32
FIXED_NS = time.time_ns()


class CountingStore(RouterStore):
    """The real store, counting the batch statements."""

    loads = 0
    persists = 0

    async def load_batch(self, **kw: Any):  # type: ignore[no-untyped-def]
        self.loads += 1
        return await super().load_batch(**kw)

    async def persist_many(self, rows):  # type: ignore[no-untyped-def]
        self.persists += 1
        return await super().persist_many(rows)


@dataclass
class Env:
    router: Router
    store: CountingStore
    redis: aioredis.Redis
    log: DurableLog
    db_url: str


def _subs() -> list[spb.Subscription]:
    fixed = spb.SIZING_MODE_FIXED_USD
    return [
        subscription("sub_cap", "w_cap", sizing=spb.Sizing(mode=fixed, fixed_usd="25"),
                     risk=spb.Risk(max_market_exposure_usd="60")),
        subscription("sub_tot", "w_tot", sizing=spb.Sizing(mode=fixed, fixed_usd="30"),
                     risk=spb.Risk(max_total_exposure_usd="70")),
        subscription("sub_open", "w_open", sizing=spb.Sizing(mode=fixed, fixed_usd="10"),
                     risk=spb.Risk(max_open_positions=1)),
        # its BUY copies are below the market minimum: only its SELLs go out, sized on what it holds
        subscription("sub_sell", "w_sell", sizing=spb.Sizing(mode=fixed, fixed_usd="0.5"),
                     filters=spb.Filters(copy_sells=True)),
        # holds nothing: its SELLs go out while its BUY copies are in flight, sized by the executor later
        subscription("sub_flip", "w_flip", sizing=spb.Sizing(mode=fixed, fixed_usd="5"),
                     filters=spb.Filters(copy_sells=True)),
    ]


def _trades() -> list[mpb.LeaderTradeEvent]:
    sell = cpb.SIDE_SELL
    evs = [
        leader_trade("lt_1"),  # leader 0 -> 250
        leader_trade("lt_2"),  # -> 500
        leader_trade("lt_3", asset=ASSET2),  # another market: open positions / total exposure
        leader_trade("lt_4"),  # -> 750; w_cap's market cap binds (cut, then no headroom)
        leader_trade("lt_5", side=sell, size="375"),  # half of 750: w_sell sells 50 of its 100
        leader_trade("lt_2"),  # delivered twice within the batch
        leader_trade("lt_6", price="1.5"),  # invalid: every follower skipped
        leader_trade("lt_7", side=sell, size="375"),  # the rest (375 of 375): the 50 not yet being sold
        leader_trade("lt_8", side=sell, size="10"),  # nothing left to sell
        leader_trade("lt_9"),
    ]
    evs.insert(3, mpb.LeaderTradeEvent(id="lt_x", wallet=LEADER, activity_type=mpb.ACTIVITY_TYPE_REDEEM))
    for ev in evs:
        ev.condition_id = COND2 if ev.asset_id == ASSET2 else COND
        ev.received_time_ns = FIXED_NS
        ev.venue_time_ms = FIXED_NS // 1_000_000 - 1500
    return evs


@pytest.fixture
async def env(db_url: str, redis_url: str) -> AsyncIterator[Env]:
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url)
    fast = FastRedis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    session = aiohttp.ClientSession()
    for sub in _subs():
        await hotindex.upsert(r, sub)
    now_ms = FIXED_NS // 1_000_000
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ms))
    await write_market(r, MarketInfo(ASSET2, COND2, D("0.01"), D("5"), updated_ms=now_ms))
    for asset in (YES, ASSET2):
        await r.set(f"tt:book:{asset}", "{}")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_sell', %s, %s, '0xa', 100, 0.4, 40)", (YES, COND))
    cache = SubscriptionCache(r)
    await cache.reload_all()
    state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000)
    store = CountingStore(pool)
    log_ = DurableLog(sr, ROUTED_TRADES)
    router = redis_markets_router(cache, state, store, log_, r, session, now_ns=FIXED_NS)
    yield Env(router, store, r, log_, db_url)
    await session.close()
    await store.close()
    await pool.close()
    fast.close()
    await sr.aclose()
    await r.aclose()


async def _prepare(env: Env, case: str) -> None:
    """The state an earlier run left behind, per case."""
    if case == "claimed":  # lt_2's copy for w_cap claimed before (e.g. by hand): that order is dropped
        await reservations.reserve(env.redis, [reservations.Reservation(
            client_order_id("lt_2", "w_cap", YES), "w_cap", reservations.USD, COND, 7_000_000, "someone")])
    elif case in ("unappended", "unpersisted"):  # lt_3 decided earlier with a different outcome
        [lt_3] = [ev for ev in _trades() if ev.id == "lt_3"]
        routed = epb.RoutedTrade(trade=lt_3)
        routed.orders.add(client_order_id="co_early", subscription_id="sub_tot", follower_wallet_id="w_tot",
                          asset_id=ASSET2, condition_id=COND2, side=cpb.SIDE_BUY, amount_usd="33",
                          mode=cpb.EXECUTION_MODE_LIVE, leader_trade_id="lt_3")
        payload = routed.SerializeToString()
        if case == "unappended":
            await env.store.persist(routed_row(routed, payload, parse_trade(routed.trade), None))
        else:
            done = await env.router.redis_state.emit("lt_3", payload,
                                                     "co_early\tw_tot\tusd:" + COND2 + "\t33000000\tlt_3")
            assert done.status == "ok"


async def _outcome(env: Env) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(env.db_url) as conn:
            return list(conn.execute(sql).fetchall())

    keys = sorted(await env.redis.keys("tt:resv:*"))
    return {
        "log": [epb.RoutedTrade.FromString(p) for _, p in await env.log.read("0-0", count=1000, block_ms=0)],
        "orders": sorted((o.leader_trade_id, o.client_order_id, o.follower_wallet_id, o.side, o.amount_usd, o.size)
                         for o in persisted_orders(env.db_url)),
        "skips": rows("SELECT leader_trade_id, subscription_id, reason, detail FROM copy_skips ORDER BY 1, 2"),
        "trades": [(*row[:3], _untraced(epb.RoutedTrade.FromString(row[3])), *row[4:])
                   for row in rows("SELECT leader_trade_id, orders, skips, payload, appended_cursor IS NOT NULL"
                                   " FROM routed_trades ORDER BY 1")],
        "stats": rows("SELECT subscription_id, skipped FROM subscription_stats ORDER BY 1"),
        "leader": rows("SELECT leader_wallet, asset_id, size, last_trade_id FROM leader_positions ORDER BY 1, 2"),
        "reserved": {k: await env.redis.hgetall(k) for k in keys},
    }


def _sized(o: epb.Order) -> str:
    """A SELL's size, or its fraction marked with an x when the executor sizes it."""
    return o.size or (f"x{o.sell_fraction}" if o.sell_fraction else "")


def _decided(log: list[epb.RoutedTrade]) -> list[tuple[str, list[tuple[str, str, str]], list[tuple[str, str]]]]:
    return [(r.trade.id, [(o.follower_wallet_id, o.amount_usd, _sized(o)) for o in r.orders],
             [(k.subscription_id, k.reason) for k in r.skips]) for r in log]


def _untraced(routed: epb.RoutedTrade) -> bytes:
    """The routed trade's bytes without trace contexts (each run has its own trace ids once any test
    has installed a real tracer provider)."""
    copy = epb.RoutedTrade()
    copy.CopyFrom(routed)
    copy.trade.ClearField("trace")
    if copy.HasField("common"):
        copy.common.ClearField("trace")
    for order in copy.orders:
        order.ClearField("trace")
    return copy.SerializeToString()


async def _one_by_one(env: Env) -> dict[str, Any]:
    for ev in _trades():
        await env.router.handle(ev)
    return await _outcome(env)


async def _reset(env: Env) -> None:
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE routed_trades, copy_skips, subscription_stats, leader_positions")
    for pattern in ("tt:resv:*", "tt:order:*", "tt:router:routed:*", "tt:router:sells:*"):
        for key in await env.redis.keys(pattern):
            await env.redis.delete(key)
    await env.redis.delete(ROUTED_TRADES)


@pytest.mark.parametrize("case", ["plain", "claimed", "unappended", "unpersisted"])
async def test_a_batch_decides_as_one_by_one(env: Env, case: str) -> None:
    await _prepare(env, case)
    expected = await _one_by_one(env)
    await _reset(env)
    await _prepare(env, case)
    loads = env.store.loads
    await env.router.handle_batch(_trades())
    got = await _outcome(env)
    assert _decided(got["log"]) == _decided(expected["log"])
    assert [_untraced(r) for r in got["log"]] == [_untraced(r) for r in expected["log"]]
    for part in ("orders", "skips", "trades", "stats", "leader", "reserved"):
        assert got[part] == expected[part], part
    # one read per run of trades that could be decided together
    assert env.store.loads - loads == (1 if case == "plain" else 2)


async def test_caps_bind_mid_batch_and_sells_see_earlier_trades(env: Env) -> None:
    await env.router.handle_batch(_trades())
    assert env.store.loads == 1 and env.store.persists == 1
    decided = {lt: (orders, skips) for lt, orders, skips in _decided((await _outcome(env))["log"])}
    assert list(decided) == ["lt_1", "lt_2", "lt_3", "lt_4", "lt_5", "lt_6", "lt_7", "lt_8", "lt_9"]

    def order(lt: str, wallet: str) -> tuple[str, str] | None:
        return next(((a, z) for w, a, z in decided[lt][0] if w == wallet), None)

    def skip(lt: str, sub: str) -> str | None:
        return next((reason for s, reason in decided[lt][1] if s == sub), None)

    # market cap 60: 25 + 25, then cut to 10, then no headroom
    assert [order(lt, "w_cap") for lt in ("lt_1", "lt_2", "lt_4")] == [("25", ""), ("25", ""), ("10", "")]
    assert skip("lt_9", "sub_cap") == "MARKET_EXPOSURE_LIMIT"
    # total cap 70 across markets: 30 + 30, then 10 in the other market, then none
    assert [order(lt, "w_tot") for lt in ("lt_1", "lt_2", "lt_3")] == [("30", ""), ("30", ""), ("10", "")]
    assert skip("lt_4", "sub_tot") == "TOTAL_EXPOSURE_LIMIT"
    # one open position allowed: the in-flight BUY in the first market blocks the second market
    assert order("lt_1", "w_open") == ("10", "") and skip("lt_3", "sub_open") == "MAX_OPEN_POSITIONS"
    # SELLs: half of the leader's 750 -> 50 of 100 shares; then the rest -> the 50 not yet being sold; then none
    assert order("lt_5", "w_sell") == ("", "50") and order("lt_7", "w_sell") == ("", "50")
    assert skip("lt_8", "sub_sell") == "NOTHING_HELD"
    # w_flip's BUYs are in flight: its SELLs carry the leader's fraction (half, then the rest, then all)
    assert [order(lt, "w_flip") for lt in ("lt_1", "lt_5", "lt_7", "lt_8")] == [
        ("5", ""), ("", "x0.5"), ("", "x1"), ("", "x1")]
    assert skip("lt_6", "sub_cap") == "INVALID_TRADE"
    assert env.router.metrics.counts["duplicate_redis"] == 1 and env.router.metrics.counts["ignored"] == 1
