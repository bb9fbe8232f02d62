"""A SELL the executor refuses for good (SubmitRejected: no order exists, so no order event will ever bring the
refusal) is recorded FAILED even when PostgreSQL drops as guard records it: left FIRED, its size would count as in
flight on the position and defer the position's stop-loss until a restart (real PostgreSQL and Redis, stand-in
ingest and executor)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from services.guard.ports import SubmitRejected
from tests.guard.conftest import GuardFactory
from tests.guard.standins import StandIns, add_market, db, insert_trigger, set_position, trigger_row, wait_connected
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


async def test_a_refused_sell_whose_failure_was_not_recorded_at_once_does_not_block_the_stop_loss(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.60", fraction="1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    running = await make_guard()
    guard = running.guard
    submit = guard.firer.executor.submit

    async def refusing_the_take_profit(order: epb.Order) -> epb.SubmitOrderResponse:
        if order.trigger_id == "trg_tp":
            raise SubmitRejected("INVALID_ARGUMENT", "refused")
        return await submit(order)

    guard.firer.executor.submit = refusing_the_take_profit  # type: ignore[method-assign]
    store = guard.firer.store
    settle = store.settle
    drops: list[str] = []

    async def settle_losing_the_first(trigger_id: str, *args: Any) -> Any:
        if trigger_id == "trg_tp" and not drops:
            drops.append(trigger_id)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await settle(trigger_id, *args)

    store.settle = settle_losing_the_first  # type: ignore[method-assign]
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.65", ask="0.7")
    await eventually(lambda: drops == ["trg_tp"])
    await guard.drain()
    tp = await trigger_row(conn, "trg_tp")
    assert (tp["state"], tp["state_reason"]) == ("FAILED", "SUBMIT_REJECTED:INVALID_ARGUMENT")
    assert guard.firer.stats.settle_retries == 1

    await standins.ingest.tick(bid="0.25", ask="0.3")  # the market crashes through the stop
    await eventually(lambda: [(o.trigger_id, o.size) for o in standins.executor.sells] == [("trg_sl", "100")])
    await conn.close()
