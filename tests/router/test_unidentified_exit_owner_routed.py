"""A leader's close without slugs, through the router's real path (real PostgreSQL and Redis).

The subscription copies the leader only in markets of its allowlist, and the close of 'will-it-rain' comes without
slugs, with market info that names none (one written from a book): the allowlist cannot rule the market out. The
follower's 62.5 shares are sold when this subscription's copy opened the position (``positions.subscription_id``,
origin COPY); when the follower bought them by hand (origin MANUAL), or another subscription's copy did, the exit is
skipped MARKET_NOT_ALLOWED and the shares stay held.
"""

from __future__ import annotations

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


async def _setup(db_url: str, r: aioredis.Redis, now_ns: int, origin: str, opener: str | None) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, origin, subscription_id) VALUES ('w_1', %s, %s, '0xa', 62.5, 0.4, 25, %s, %s)",
                     (YES, COND, origin, opener))
        conn.execute("INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                     " VALUES (%s, %s, 250, 'lt_buy')", (LEADER, YES))
    await hotindex.upsert(r, subscription("sub_A", "w_1",
                                          filters=spb.Filters(copy_sells=True, market_allowlist=["will-it"])))
    # market info from a book: no slugs
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize(("origin", "opener", "sold"), [
    ("COPY", "sub_A", D("62.5")),  # this subscription's copy: its leader's close is mirrored
    ("MANUAL", None, None),  # bought by hand at the terminal
    ("EXTERNAL", None, None),  # found at the venue by reconciliation
    ("COPY", "sub_B", None),  # another subscription's copy
    ("MANUAL", "sub_A", None),  # a subscription id on a manual position names no copy
])
async def test_an_unidentified_close_sells_only_what_the_subscriptions_copy_bought(
        db_url: str, redis_url: str, r: aioredis.Redis, origin: str, opener: str | None, sold: Decimal | None,
        batched: bool) -> None:
    now_ns = time.time_ns()
    await _setup(db_url, r, now_ns, origin, opener)
    close = leader_trade("lt_close", side=cpb.SIDE_SELL, size="250", price="0.55")
    close.market_slug, close.event_slug = "", ""
    [routed] = await route_on_redis(r, redis_url, db_url, [close], now_ns=now_ns, batched=batched)
    if sold is None:
        assert (list(routed.orders), [s.reason for s in routed.skips]) == ([], ["MARKET_NOT_ALLOWED"])
    else:
        assert [s.reason for s in routed.skips] == []
        [o] = routed.orders
        assert (o.subscription_id, o.side, D(o.size)) == ("sub_A", cpb.SIDE_SELL, sold)
