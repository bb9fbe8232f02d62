"""A trade appended before a crash that left its rows unwritten, delivered again once the log no longer holds its
entry (trimmed behind its readers): its rows are written from the trade as delivered, never from the entry that
follows it in the log (another leader trade's, or the parts of another split fan-out)."""

from __future__ import annotations

import psycopg
import pytest

from common.fastredis import FastRedis
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from services.router.adapters.redis_state import RedisState
from services.router.outbound import split_routed
from services.router.outbox import Emitter
from tests.helpers import eventually
from tests.router.conftest import COND, YES, Stack, leader_trade, subscription
from tradingtools.common.v1.common_pb2 import SIDE_BUY as BUY
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _rows(db_url: str) -> dict[str, str | None]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT leader_trade_id, appended_cursor FROM routed_trades").fetchall())


async def test_a_trade_redelivered_after_its_entry_was_trimmed_gets_its_own_rows(stack: Stack) -> None:
    await stack.add(subscription("sub_0", "w_0"), subscription("sub_1", "w_1"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_1"), leader_trade("lt_2"))
    await eventually(lambda: len(_rows(stack.db_url)) == 2, timeout_s=20, message="both trades routed")
    await stack.stop_router()
    cursors = _rows(stack.db_url)
    # lt_1's rows were never written (the router crashed between its emit and its rows, or PostgreSQL was down
    # for longer than the log keeps what its readers have read), and the log was trimmed past its entry
    with psycopg.connect(stack.db_url) as conn:
        conn.execute("DELETE FROM routed_orders WHERE leader_trade_id = 'lt_1'")
        conn.execute("DELETE FROM copy_skips WHERE leader_trade_id = 'lt_1'")
        conn.execute("DELETE FROM routed_trades WHERE leader_trade_id = 'lt_1'")
    await stack.stream_redis.xtrim(ROUTED_TRADES, minid=cursors["lt_2"], approximate=False)

    await stack.start_router()
    await stack.publish(leader_trade("lt_1"))  # delivered again (the data-api poller finds it too)
    await eventually(lambda: "lt_1" in _rows(stack.db_url), timeout_s=15, message="lt_1's rows written")
    assert _rows(stack.db_url) == cursors  # lt_1's at its marker's cursor; lt_2's untouched


def _trade(tid: str, n: int) -> epb.RoutedTrade:
    routed = epb.RoutedTrade(trade=leader_trade(tid), common=epb.Order(asset_id=YES, condition_id=COND, side=BUY,
                                                                       leader_trade_id=tid))
    routed.orders.extend(epb.Order(client_order_id=f"co_{tid}_{i:05d}", follower_wallet_id=f"w_{i:05d}", amount_usd="1",
                                   follower_user_id="u" * 120, subscription_id=f"sub_{i:05d}") for i in range(n))
    return routed


async def test_the_appended_payload_of_a_trimmed_split_trade_is_not_the_next_ones(redis_url: str) -> None:
    fast = FastRedis(redis_url, timeout_s=5.0)
    sr = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(sr, ROUTED_TRADES)
        state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=60, stream_maxlen=100_000)
        emitter = Emitter(state, None, fetch=log_.entries_from)  # type: ignore[arg-type]
        first, second = _trade("lt_a", 8000), _trade("lt_b", 8000)
        assert len(split_routed(second, second.SerializeToString())) > 1  # both go out in parts
        a = await emitter.emit("lt_a", first, first.SerializeToString(), mark=False)
        b = await emitter.emit("lt_b", second, second.SerializeToString(), mark=False)
        joined = await emitter.appended_payload(b.cursor)
        assert joined is not None and len(epb.RoutedTrade.FromString(joined).orders) == 8000
        await sr.xtrim(ROUTED_TRADES, minid=b.cursor, approximate=False)  # every part of lt_a trimmed
        assert await emitter.appended_payload(a.cursor) is None
    finally:
        fast.close()
        await sr.aclose()
