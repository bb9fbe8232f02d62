"""A position closed and opened again before guard read the closing SELL: the triggers made for the life that ended
are cancelled when that SELL is read, whether or not the position had a copy exits group (one bought through the
trading terminal, origin MANUAL, has none), and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.guard.adapters.exit_store import ExitStore
from services.guard.domain.exit_plans import CopyFill
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    WALLET,
    WALLET_ID,
    ExecutorStandIn,
    StandIns,
    add_market,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _manual(coid: str, side: int, size: str, price: str) -> epb.OrderEvent:
    order = epb.Order(client_order_id=coid, origin=epb.ORDER_ORIGIN_MANUAL, follower_wallet_id=WALLET_ID,
                      follower_proxy=WALLET, asset_id=ASSET, condition_id=CONDITION, side=side, size=size)
    return ExecutorStandIn.event(order, epb.ORDER_EVENT_TYPE_FILLED, filled=size, price=price)


async def _reopen(conn: Any, size: str, avg: str) -> None:
    """The position sold out and bought again: a new life, opened after the last one."""
    await set_position(conn, "0", avg)
    await set_position(conn, size, avg)
    await conn.execute("UPDATE positions SET opened_at = now() + interval '1 second' WHERE follower_wallet_id = %s",
                       (WALLET_ID,))


@pytest.fixture
def store(exit_store: ExitStore) -> ExitStore:
    return exit_store


@pytest.mark.parametrize("in_order", [True, False], ids=["sell-read-in-time", "sell-read-after-reopen"])
async def test_the_manual_stop_of_a_closed_manual_life_never_sells_the_next_life(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory, in_order: bool) -> None:
    conn = await db(db_url)
    await add_market(redis, min_size="5")
    await set_position(conn, "100", "0.40")  # life 1, bought through the terminal: no copy exits group
    await insert_trigger(conn, "trg_manual_sl", "STOP_LOSS", price="0.30", fraction="1")
    guard = (await make_guard()).guard
    await set_position(conn, "0", "0.40")  # the user sells life 1 through the terminal
    if in_order:
        await guard.on_order_event(_manual("co_msell", cpb.SIDE_SELL, "100", "0.35"))
    await _reopen(conn, "50", "0.28")  # and buys life 2 at 0.28, below the stop
    if not in_order:  # guard reads the closing SELL only now (it was restarting / lagging)
        await guard.on_order_event(_manual("co_msell", cpb.SIDE_SELL, "100", "0.35"))
    await guard.on_order_event(_manual("co_mbuy", cpb.SIDE_BUY, "50", "0.28"))
    await guard.drain()
    assert (await trigger_row(conn, "trg_manual_sl"))["state"] == "CANCELLED"
    assert "trg_manual_sl" not in guard.engine.ids()

    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.29", ask="0.3")  # life 2 is up: nothing sells it
    await eventually(lambda: guard.stats.ticks >= 1)
    assert standins.executor.sells == []
    await conn.close()


async def test_a_late_sell_cancels_the_old_lifes_manual_stop_and_keeps_the_new_lifes_copy_exits(
        db_url: str, store: ExitStore) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await set_position(conn, "100", "0.40")  # life 1, manual: its stop, no group
    await insert_trigger(conn, "trg_manual_sl", "STOP_LOSS", price="0.30", fraction="1")
    await _reopen(conn, "50", "0.60")  # life 2, copied: its exits group is registered
    created = await store.on_buy_fill(CopyFill(WALLET_ID, WALLET, ASSET, "sub_1", "co_buy2", Decimal(50),
                                               Decimal("0.60")), Decimal("0.01"))
    assert created.outcome == "CREATED" and created.created

    change = await store.on_sell_fill(WALLET_ID, ASSET)  # life 1's SELL, read late
    assert [r.id for r in change.cancelled] == ["trg_manual_sl"]
    for row in created.created:
        assert (await trigger_row(conn, row.id))["state"] == "ARMED"
    assert (await store.group(WALLET_ID, ASSET)) is not None
    await conn.close()


async def test_a_trigger_that_recorded_no_life_is_cancelled_only_when_a_life_is_known_to_have_ended(
        db_url: str, store: ExitStore) -> None:
    conn = await db(db_url)
    # set before the position first opened (so it recorded no opening time): it guards the life open now
    await insert_trigger(conn, "trg_before", "STOP_LOSS", price="0.30", size="10",
                         created=datetime.now(UTC) - timedelta(minutes=1))
    await set_position(conn, "50", "0.40")
    assert (await trigger_row(conn, "trg_before"))["position_opened_at"] is None

    change = await store.on_sell_fill(WALLET_ID, ASSET)  # a partial SELL of this life
    assert (change.outcome, change.cancelled) == ("OPEN", ())
    assert (await trigger_row(conn, "trg_before"))["state"] == "ARMED"

    # a stop that recorded an earlier life: the position was opened again since, and both were made before it
    await insert_trigger(conn, "trg_old_life", "STOP_LOSS", price="0.30", fraction="1")
    await conn.execute("UPDATE triggers SET position_opened_at = position_opened_at - interval '1 hour'"
                       " WHERE id = 'trg_old_life'")
    change = await store.on_sell_fill(WALLET_ID, ASSET)
    assert sorted(r.id for r in change.cancelled) == ["trg_before", "trg_old_life"]
    await conn.close()
