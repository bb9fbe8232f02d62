"""A SELL copy the relog appends again (Redis lost its entry, claim and SELL index member) is in the SELL index again,
under its subscription, as at its first emit: the router's later SELLs of the wallet's asset see it by id."""

from __future__ import annotations

import psycopg
import pytest

from common import reservations
from common.routed import parse_routed
from common.streams import ROUTED_TRADES
from services.router.adapters.redis_state import SELLS_PREFIX, marker_key
from tests.helpers import eventually
from tests.router.conftest import COND, YES, Stack, leader_trade, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


async def _entries(stack: Stack) -> dict[str, tuple[str, epb.RoutedTrade]]:
    out: dict[str, tuple[str, epb.RoutedTrade]] = {}
    for cursor, payload in await stack.routed_log.read("0-0", count=1000, block_ms=0):
        routed = parse_routed(payload)
        out[routed.trade.id] = (cursor, routed)
    return out


async def _has(stack: Stack, lt: str) -> str:
    """The cursor of ``lt``'s entry, "" while there is none."""
    got = (await _entries(stack)).get(lt)
    return got[0] if got else ""


async def _moved(stack: Stack, lt: str, old: str) -> str:
    """The cursor of ``lt``'s entry once it is not ``old`` ("" before)."""
    now = await _has(stack, lt)
    return now if now != old else ""


def _persisted(db_url: str, lt: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT 1 FROM routed_trades WHERE leader_trade_id = %s AND appended_cursor IS NOT NULL",
                            (lt,)).fetchone() is not None


async def test_a_sell_appended_again_is_indexed_again_under_its_subscription(stack: Stack) -> None:
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd) VALUES ('w_1', %s, %s, '0xa', 100, 0.4, 40)", (YES, COND))
    await stack.add(subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_buy", size="300"))
    bought = await eventually(lambda: _has(stack, "lt_buy"), timeout_s=20)
    assert bought
    for o in (await _entries(stack))["lt_buy"][1].orders:  # the executor got nothing bought: released
        await reservations.release(stack.redis, o.client_order_id)
    await stack.publish(leader_trade("lt_sell", side=cpb.SIDE_SELL, size="100", price="0.5"))
    assert await eventually(lambda: _has(stack, "lt_sell"), timeout_s=20)
    await eventually(lambda: _persisted(stack.db_url, "lt_sell"), timeout_s=20)
    await stack.stop_router()
    cursor, sell = (await _entries(stack))["lt_sell"]
    [order] = sell.orders
    index = f"{SELLS_PREFIX}w_1|{YES}"
    assert await stack.redis.smembers(index) == {f"{order.client_order_id}|sub_1"}
    # Redis comes back without the SELL's emit: its entry, marker, claim, reservation and index member
    await stack.redis.xdel(ROUTED_TRADES, cursor)
    await stack.redis.delete(marker_key("lt_sell"), reservations.order_key(order.client_order_id),
                             reservations.wallet_key("w_1"), index)

    await stack.start_router()
    assert await eventually(lambda: _moved(stack, "lt_sell", cursor), timeout_s=20, message="appended again")
    assert await stack.redis.get(reservations.order_key(order.client_order_id))
    assert await stack.redis.smembers(index) == {f"{order.client_order_id}|sub_1"}
