"""A SELL copy sent with a fraction earlier in a batch holds the wallet's later SELLs of the asset back as one routed
before it does (real PostgreSQL and Redis), whatever market key the trades carry.

w_1 holds 90 shares with a $10 copy BUY in flight in the market (condition id COND); the leader holds 100. The
leader sells 50 in a trade with the condition id (market COND: the BUY in flight, so the copy goes out as fraction
0.5), then 25 in a trade without one (market key: the asset, where no BUY is in flight). Routed one by one, the
second trade reads the first copy's claim still reserving nothing (not sized yet) and goes out as a fraction too,
sized by the executor after the first: 0.5 of what it leaves. In one batch it must decide the same; sized at once
(45 of the 90) the wallet sold 45 + 45 of 90 where the leader sold 75 %.
"""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex, reservations
from common.marketstate import MarketInfo, write_market
from services.router.domain.carry import InFlight
from services.router.domain.model import OrderIntent, Side
from tests.router.conftest import COND, LEADER, YES, leader_trade, route_on_redis, subscription
from tests.router.factories import trade
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal


def _sell(wallet: str, size: str | None, fraction: str | None) -> OrderIntent:
    return OrderIntent("sub_A", wallet, f"co_{wallet}_{size}_{fraction}", Side.SELL, None,
                       D(size) if size is not None else None, 200, D(fraction) if fraction is not None else None)


def test_the_carry_counts_the_sells_sent_with_a_fraction_by_wallet_and_asset() -> None:
    carry = InFlight()
    sell = trade(id="lt_s", side=Side.SELL, size=D(50))
    carry.add(sell, "0xc", [_sell("w_1", None, "0.5"), _sell("w_2", "10", None)], D(100))
    carry.add(sell, sell.asset_id, [_sell("w_1", None, "0.5")], D(100))  # another market key, the same asset
    assert carry.unsized("w_1", sell.asset_id) == 2
    assert carry.unsized("w_2", sell.asset_id) == 0  # sized: its shares are reserved instead
    assert carry.unsized("w_1", "another") == 0 and carry.unsized("w_3", sell.asset_id) == 0


def _sized(routed: epb.RoutedTrade) -> list[tuple[str, str, str]]:
    return [(o.follower_wallet_id, o.size, o.sell_fraction) for o in routed.orders]


def _sells(now_ns: int, conditions: tuple[str, str]) -> list[mpb.LeaderTradeEvent]:
    evs = [leader_trade("lt_half", side=cpb.SIDE_SELL, size="50", price="0.5"),
           leader_trade("lt_quarter", side=cpb.SIDE_SELL, size="25", price="0.5")]
    for ev, cond in zip(evs, conditions, strict=True):
        ev.condition_id = cond
        ev.received_time_ns, ev.venue_time_ms = now_ns, now_ns // 1_000_000 - 1500
    return evs


@pytest.mark.integration
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("conditions", [pytest.param((COND, ""), id="condition id, then none"),
                                        pytest.param(("", COND), id="none, then the condition id"),
                                        pytest.param((COND, COND), id="both with it")])
async def test_a_fraction_sell_earlier_in_a_batch_makes_the_later_ones_fractions_too(
        db_url: str, redis_url: str, r: aioredis.Redis, batched: bool, conditions: tuple[str, str]) -> None:
    now_ns = time.time_ns()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_1', %s, %s, '0xa', 90, 0.4, 36)", (YES, COND))
        conn.execute("INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)"
                     " VALUES (%s, %s, 100, 'lt_seen')", (LEADER, YES))
    # the copy BUY in flight, reserved against the market it was routed in
    market = conditions[0] or YES
    assert await reservations.reserve(r, [reservations.Reservation(
        "co_buy", "w_1", reservations.USD, market, 10_000_000, "lt_buy")]) == [True]
    await hotindex.upsert(r, subscription("sub_A", "w_1"))
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=now_ns // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    routed = await route_on_redis(r, redis_url, db_url, _sells(now_ns, conditions), now_ns=now_ns, batched=batched)
    # half of the leader's 100, then half of its 50 left: both sized by the executor, in turn
    assert [_sized(x) for x in routed] == [[("w_1", "", "0.5")], [("w_1", "", "0.5")]]
