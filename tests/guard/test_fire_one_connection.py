"""A fire reads what it decides on (the position, the SELLs in flight, its own SELLs that ended LOST) in its own
transaction: holding a pooled connection and the position's lock, it never waits for a second connection, which
the pool's other users (some waiting for that very lock) may all hold (real PostgreSQL, fakes for the rest)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from common.marketstate import MarketInfo
from common.storage import create_pool
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import State
from services.guard.firing import Firer
from tests.guard.standins import ASSET, CONDITION, armed_stop, db
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


class _Markets:
    async def market(self, _asset_id: str) -> MarketInfo:
        return MarketInfo(ASSET, CONDITION, Decimal("0.01"), Decimal(5))


class _Executor:
    def __init__(self) -> None:
        self.orders: list[epb.Order] = []

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        self.orders.append(order)
        return epb.SubmitOrderResponse(client_order_id=order.client_order_id)


async def test_a_fire_sells_while_the_rest_of_the_pool_is_busy(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=2, max_size=2, timeout_s=2.0, autocommit=True)
    try:
        store = TriggerStore(pool, lambda: datetime.now(UTC))
        conn = await db(db_url)
        fired = await armed_stop(conn, store)
        await conn.close()
        executor = _Executor()
        firer = Firer(store, executor, _Markets(), on_order_event=lambda _e: None,  # type: ignore[arg-type]
                      rearm=lambda *_a, **_k: None, clock_ns=time.time_ns, max_slippage_bps=300)
        async with pool.connection():  # the pool's other connection, held by other work
            result = await asyncio.wait_for(firer.fire(fired, [], TickInfo(Decimal("0.30"))), 10)
        assert result is not None and result.row is not None and result.row.state is State.FIRED
        assert [o.size for o in executor.orders] == ["100"]
    finally:
        await pool.close()
