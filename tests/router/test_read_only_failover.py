"""A PostgreSQL failover seen by the router: its connections drop and the ones it opens again reach a server that
refuses writes (``ReadOnlySqlTransaction``, SQLSTATE 25006) for a moment. The copy of a BUY routed then goes out
(the log is Redis), but its rows cannot be written yet. Once in the log, a trade's rows failing for an outage are
retried until writes come back, never dead-lettered: otherwise the leader's position would never record the BUY, and
the leader's exit would be skipped (LEADER_POSITION_UNKNOWN) while the follower keeps the shares."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from common import reservations
from tests.helpers import eventually, read_only_database
from tests.router.conftest import COND, LEADER, YES, Stack, leader_trade, subscription
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _sql(db_url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql, args)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


async def _routed(stack: Stack, n: int) -> list[epb.RoutedTrade] | None:
    routed = await stack.routed()
    return routed if len(routed) >= n else None


async def test_a_buy_routed_while_postgres_refuses_writes_is_recorded_and_the_exit_copied(stack: Stack) -> None:
    _sql(stack.db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                       " cost_usd) VALUES ('w_1', %s, %s, '0xa', 100, 0.4, 40)", YES, COND)
    await stack.add(subscription("sub_1", "w_1"))
    running = await stack.start_router()
    stats, attempts = running.consumer.stats, running.consumer.max_handler_attempts

    with read_only_database(stack.db_url, "tt-router"):
        await stack.publish(leader_trade("lt_buy", size="300"))
        [buy] = await eventually(lambda: _routed(stack, 1))  # the copy went out: the log is in Redis
        # past the point where a bad trade is dead-lettered
        await eventually(lambda: stats.dead_lettered or stats.transient_errors > attempts, timeout_s=20)
        assert stats.dead_lettered == 0, "a leader trade was dead-lettered while PostgreSQL refused writes"

    await eventually(lambda: _sql(stack.db_url, "SELECT size FROM leader_positions WHERE leader_wallet = %s",
                                  LEADER) == [(Decimal(300),)], timeout_s=15)
    assert _sql(stack.db_url, "SELECT leader_trade_id FROM routed_trades") == [("lt_buy",)]
    [copy] = buy.orders
    await reservations.release(stack.redis, copy.client_order_id)  # the venue filled nothing

    await stack.publish(leader_trade("lt_sell", side=cpb.SIDE_SELL, size="300", price="0.5"))
    _, sell = await eventually(lambda: _routed(stack, 2))
    assert [(o.subscription_id, o.side, o.size) for o in sell.orders] == [("sub_1", cpb.SIDE_SELL, "100")]
    assert stats.dead_lettered == 0 and await stack.stream_redis.xlen("tt:dlq:router") == 0
