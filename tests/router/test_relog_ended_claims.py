"""The relog claims again the orders of a lost routed trade the executor held no intent for when it looked. One the
executor inserted and ran to its end between that look and the emit (it ran from the entry Redis later lost) was
released before it was claimed again: its new claim is released by no order's end. When the trade appended again is
then set aside (dead-lettered), the executor's orphan pass leaves the order alone (it has a row: its own end released
it), so nothing would release that claim: the relog releases the claims of the orders it finds ended after its emit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from common import reservations
from common.fastredis import FastRedis
from common.routed import parse_routed
from common.storage import create_pool
from common.streams import ROUTED_TRADES
from services.executor.adapters.order_store import OrderStore
from services.executor.releases import Repairs, orphaned
from services.router.adapters.redis_state import RedisState, marker_key
from services.router.adapters.relog import LogPresence, RelogStore
from services.router.adapters.store import RouterStore
from services.router.outbox import Emitter
from services.router.relog import Relog
from tests.helpers import eventually
from tests.router.conftest import Stack, leader_trade, subscription

pytestmark = pytest.mark.integration


class _EndsInBetween(RelogStore):
    """The executor inserts and ends ``coid`` right after the relog read which orders it holds an intent for."""

    def __init__(self, pool: Any, db_url: str, coid: str) -> None:
        super().__init__(pool)
        self.db_url, self.coid = db_url, coid

    async def admitted(self, client_order_ids: Sequence[str]) -> set[str]:
        seen = await super().admitted(client_order_ids)
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id,"
                         " side, order_type, order_proto, terminal_at) VALUES (%s, 'FILLED', 'INSIDERS', 'router',"
                         " 'w_0', 'a', 'BUY', 'FAK', '\\x00', now()) ON CONFLICT DO NOTHING", (self.coid,))
        return seen


async def _held(stack: Stack) -> int:
    return (await reservations.read(stack.redis, ["w_0"]))["w_0"].total_usd_micro


async def test_a_claim_made_again_for_an_order_ended_meanwhile_is_released(stack: Stack) -> None:
    await stack.add(subscription("sub_0", "w_0"))
    await stack.start_router()
    await stack.publish(leader_trade("lt_1"))
    await eventually(lambda: _appended(stack.db_url), timeout_s=20, message="routed and persisted")
    await stack.stop_router()
    [(cursor, payload)] = await stack.routed_log.read("0-0", count=10, block_ms=0)
    [order] = parse_routed(payload).orders
    # Redis comes back without the trade's emit (entry, marker, claim, reservation)
    await stack.redis.xdel(ROUTED_TRADES, cursor)
    await stack.redis.delete(marker_key("lt_1"), reservations.order_key(order.client_order_id),
                             reservations.wallet_key("w_0"))

    pool = await create_pool(stack.db_url, min_size=1, max_size=2, autocommit=True)
    fast = FastRedis(stack.redis_url)
    try:
        emitter = Emitter(RedisState(fast, ROUTED_TRADES, marker_ttl_s=3600, stream_maxlen=10_000), RouterStore(pool))
        relog = Relog(_EndsInBetween(pool, stack.db_url, order.client_order_id),
                      LogPresence(stack.redis, ROUTED_TRADES), emitter)
        assert await relog.check() == 1  # appended again, with the order the executor had no intent for
        # the trade appended again is set aside, and the executor's orphan pass runs
        await orphaned(stack.redis, [order.client_order_id])

        async def release(redis: Any, ids: list[str]) -> list[int]:
            return await reservations.release_many(redis, ids)

        await Repairs(stack.redis, OrderStore(pool), release).run()
        held = await _held(stack)
        assert held == 0, f"ended order {order.client_order_id} claimed again keeps {held} micro-USD for good"
    finally:
        fast.close()
        await pool.close()


def _appended(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT 1 FROM routed_trades WHERE appended_cursor IS NOT NULL").fetchone() is not None
