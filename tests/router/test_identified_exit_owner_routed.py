"""A leader's exit in a market the subscription copies, through the router's real path (real PostgreSQL and Redis).

The reviewer's case: the leader buys 'will-it-rain' at 0.40; the follower's copy is skipped (maxPrice 0.30), so the
subscription's copies bought nothing. The follower then buys 500 shares of the token by hand (a MANUAL position, no
split kept). The leader's close was mirrored on all of the wallet's shares: the router sold the follower's 500
manual shares at market. A copy SELL is sized only on what the subscription's copies bought and still hold: the
position its copy opened (``positions.subscription_id`` of an origin COPY position, no split kept, as before), or
its part of the split kept (a copy BUY booked on a position bought by hand keeps one: ``{"": manual, sub: copy}``).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex
from common.marketstate import MarketInfo, write_market
from tests.router.conftest import COND, LEADER, YES, leader_trade, route_on_redis, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

D = Decimal


async def _market(r: aioredis.Redis, now_ns: int) -> None:
    """Market info that names the market (the allow- and denylists could rule it out: an identified market)."""
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), market_slug="will-it-rain",
                                     event_slug="rain-2026", updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")


def _position(db_url: str, size: str, cost: str, origin: str, opener: str | None,
              split: dict[str, list[str]] | None = None) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, origin, subscription_id, subscription_shares)"
                     " VALUES ('w_1', %s, %s, '0xa', %s, 0.4, %s, %s, %s, %s::jsonb)",
                     (YES, COND, D(size), D(cost), origin, opener, None if split is None else json.dumps(split)))


@pytest.mark.parametrize("batched", [False, True])
async def test_a_close_does_not_sell_shares_the_follower_bought_by_hand(
        db_url: str, redis_url: str, r: aioredis.Redis, batched: bool) -> None:
    now_ns = time.time_ns()
    await _market(r, now_ns)
    await hotindex.upsert(r, subscription("sub_A", "w_1", filters=spb.Filters(copy_sells=True, max_price="0.30")))
    buy = leader_trade("lt_buy", side=cpb.SIDE_BUY, size="250", price="0.40")
    [bought] = await route_on_redis(r, redis_url, db_url, [buy], now_ns=now_ns, batched=batched)
    assert (list(bought.orders), [s.reason for s in bought.skips]) == ([], ["PRICE_ABOVE_MAX"])
    _position(db_url, "500", "200", "MANUAL", None)  # bought at the terminal
    close = leader_trade("lt_close", side=cpb.SIDE_SELL, size="250", price="0.55")
    routed = await route_on_redis(r, redis_url, db_url, [close], now_ns=now_ns, batched=batched)
    closed = routed[-1]
    assert [(o.subscription_id, o.size) for o in closed.orders] == []
    assert [s.reason for s in closed.skips] == ["NOTHING_HELD"]


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("size", "cost", "origin", "opener", "split", "leader_sold", "sold"), [
    # held at the venue, never booked (found by reconciliation): it may be the fill of a copy BUY that ended LOST,
    # so it is sized on the wallet's shares, as before
    ("500", "200", "EXTERNAL", None, None, "250", "500"),
    # this subscription's copy opened it, no split kept (every position before splits): the whole position
    ("62.5", "25", "COPY", "sub_A", None, "250", "62.5"),
    # its copy BUY booked on shares bought by hand: its own part, in full on the leader's close
    ("562.5", "225", "MANUAL", None, {"": ["500", "200"], "sub_A": ["62.5", "25"]}, "250", "62.5"),
    # its copy opened it, the follower added by hand: the leader sells half, the copy sells half of its own part
    ("562.5", "225", "COPY", "sub_A", {"sub_A": ["62.5", "25"], "": ["500", "200"]}, "125", "31.25"),
])
async def test_a_close_sells_only_what_the_subscriptions_copies_bought(
        db_url: str, redis_url: str, r: aioredis.Redis, size: str, cost: str, origin: str, opener: str | None,
        split: dict[str, list[str]] | None, leader_sold: str, sold: str | None, batched: bool) -> None:
    now_ns = time.time_ns()
    await _market(r, now_ns)
    await hotindex.upsert(r, subscription("sub_A", "w_1"))
    _position(db_url, size, cost, origin, opener, split)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                     " VALUES (%s, %s, 250, 'lt_buy')", (LEADER, YES))
    close = leader_trade("lt_close", side=cpb.SIDE_SELL, size=leader_sold, price="0.55")
    [routed] = await route_on_redis(r, redis_url, db_url, [close], now_ns=now_ns, batched=batched)
    if sold is None:
        assert (list(routed.orders), [s.reason for s in routed.skips]) == ([], ["NOTHING_HELD"])
    else:
        assert [s.reason for s in routed.skips] == []
        [o] = routed.orders
        assert (o.subscription_id, o.side, D(o.size)) == ("sub_A", cpb.SIDE_SELL, D(sold))
