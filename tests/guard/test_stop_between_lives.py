"""A stop the user sets through control for the next life of a position, while guard has not yet read the SELL
that closed the life before: that SELL ends only the triggers of the life it closed. The stop stays armed and
sells the next life's shares on the next life's prices; the stops of the life that ended end with it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common.ids import hash_id
from services.guard.app import Running
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    BUY,
    SELL,
    TOKEN,
    WALLET,
    WALLET_ID,
    StandIns,
    add_market,
    copy_fill,
    db,
    insert_subscription,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def _stop(triggers: pb_grpc.TriggerServiceStub, price: str, *, size: str = "0",
                fraction: str = "0") -> str:
    """A manual stop-loss created through control's API, as the user sets it."""
    made = await triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=tpb.Trigger(
        wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET, kind=tpb.TRIGGER_KIND_STOP_LOSS,
        trigger_price=price, size=size, sell_fraction=fraction)), metadata=AUTH)
    return made.id


async def _book_close(conn: Any) -> None:
    """The executor books the SELL that sells life 1 to zero: the row is kept, CLOSED."""
    await conn.execute("UPDATE positions SET size = 0, cost_usd = 0, state = 'CLOSED', closed_at = now(),"
                       " updated_at = now() WHERE follower_wallet_id = %s AND asset_id = %s", (WALLET_ID, ASSET))


async def _book_reopen(conn: Any, size: str, avg: str) -> None:
    """The executor books the BUY that opens life 2: life 1 archived in position_history, the row a new life."""
    await conn.execute(
        "INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state, origin, venue,"
        " size, avg_price, cost_usd, realized_pnl_usd, opened_at, closed_at, updated_at)"
        " SELECT coalesce(id, 'pos_life1'), follower_wallet_id, asset_id, condition_id, wallet, state, origin,"
        " venue, size, avg_price, cost_usd, 0, opened_at, coalesce(closed_at, now()), updated_at FROM positions"
        " WHERE follower_wallet_id = %s AND asset_id = %s", (WALLET_ID, ASSET))
    await conn.execute(
        "UPDATE positions SET id = 'pos_life2', size = %s, avg_price = %s, cost_usd = %s, state = 'OPEN',"
        " closed_at = NULL, opened_at = clock_timestamp(), updated_at = now()"
        " WHERE follower_wallet_id = %s AND asset_id = %s",
        (Decimal(size), Decimal(avg), Decimal(size) * Decimal(avg), WALLET_ID, ASSET))


async def _life_one(conn: Any, redis: Any, make_guard: GuardFactory, triggers: pb_grpc.TriggerServiceStub,
                    standins: StandIns) -> tuple[Running, str]:
    """Life 1 (100 shares bought at 0.40, copied) guarded by the user's stop at 0.30 (sell all), armed in guard.
    Guard has read life 1's BUY (its exits group is open) before the test books anything after it: read only once
    life 2 was booked, that BUY's group would be life 2's, and no group of life 2's BUY would ever be made."""
    await insert_subscription(conn, "sub_1", exits={})
    await set_position(conn, "100", "0.40", venue="PAPER")
    await add_market(redis, min_size="1")
    running = await make_guard()
    await standins.executor.emit(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    old = await _stop(triggers, "0.30", fraction="1")
    await eventually(lambda: old in running.guard.engine)
    await eventually(lambda: _open_group(conn, "co_buy1"), message="guard never read life 1's BUY")
    await wait_connected(standins.ingest)
    return running, old


async def _open_group(conn: Any, opening_order_id: str) -> Any:
    """Guard read the BUY ``opening_order_id``: its (empty) exits group is the open one."""
    row = await (await conn.execute(
        "SELECT 1 FROM guard_position_exits WHERE follower_wallet_id = %s AND asset_id = %s AND state = 'OPEN'"
        " AND opening_order_id = %s", (WALLET_ID, ASSET, opening_order_id))).fetchone()
    return row


async def _sells_life_two(running: Running, standins: StandIns, new: str, old: str) -> None:
    """At 0.25 (below life 1's stop, above life 2's) nothing sells; at 0.19 life 2's stop sells its 50 shares."""
    await eventually(lambda: old not in running.guard.engine and new in running.guard.engine)
    await standins.ingest.tick(bid="0.25", ask="0.27")
    await standins.ingest.tick(bid="0.19", ask="0.21")
    await eventually(lambda: len(standins.executor.sells) >= 1)
    assert [(s.trigger_id, s.client_order_id, s.size) for s in standins.executor.sells] == [
        (new, hash_id("co", new, "1"), "50")]


async def test_a_stop_set_on_the_next_life_survives_the_late_closing_sell_of_the_life_before(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory,
        triggers: pb_grpc.TriggerServiceStub) -> None:
    """Life 1 sold to zero, life 2 bought, the user sets a stop on life 2; guard reads life 1's SELL only then."""
    conn = await db(db_url)
    running, old = await _life_one(conn, redis, make_guard, triggers, standins)
    await _book_close(conn)
    await _book_reopen(conn, "50", "0.28")
    new = await _stop(triggers, "0.20", fraction="1")
    await standins.executor.emit(copy_fill("co_sell1", SELL, filled="100", price="0.35"))
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.28"))
    await eventually(lambda: _open_group(conn, "co_buy2"))
    states = {t: (await trigger_row(conn, t))["state"] for t in (old, new)}
    assert states == {old: "CANCELLED", new: "ARMED"}, states
    await _sells_life_two(running, standins, new, old)
    await conn.close()


async def test_a_stop_set_between_lives_survives_the_closing_sell_read_after_it(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory,
        triggers: pb_grpc.TriggerServiceStub) -> None:
    """Life 1 sold to zero; nothing held, the user sets a stop of 50 shares for the next life; guard reads life 1's
    closing SELL only then (nothing reopened yet), and life 2 is bought after."""
    conn = await db(db_url)
    running, old = await _life_one(conn, redis, make_guard, triggers, standins)
    await _book_close(conn)
    new = await _stop(triggers, "0.20", size="50")
    await standins.executor.emit(copy_fill("co_sell1", SELL, filled="100", price="0.35"))
    await eventually(lambda: _state(conn, old, "CANCELLED"))
    assert (await trigger_row(conn, new))["state"] == "ARMED", (
        f"the stop set for the next life was ended by the SELL that closed the life before: "
        f"{(await trigger_row(conn, new))['state_reason']}")
    await _book_reopen(conn, "50", "0.28")
    await standins.executor.emit(copy_fill("co_buy2", BUY, filled="50", price="0.28"))
    await eventually(lambda: _open_group(conn, "co_buy2"))
    await _sells_life_two(running, standins, new, old)
    await conn.close()


async def _state(conn: Any, trigger_id: str, state: str) -> Any:
    return (await trigger_row(conn, trigger_id))["state"] == state


async def test_life_one_s_buy_read_only_after_life_two_was_booked_guards_life_two_once_at_its_own_prices(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory,
        triggers: pb_grpc.TriggerServiceStub) -> None:
    """Guard reads all three events of the two lives (life 1's BUY too) only after life 2 was booked: the exits
    group made on reading life 1's BUY is the position's as it is then, life 2's (entry 0.28: its 25% stop-loss at
    0.21), and is the only one; life 1's SELL read after it ends only life 1's stop."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await set_position(conn, "100", "0.40", venue="PAPER")
    await add_market(redis, min_size="1")
    running = await make_guard()
    old = await _stop(triggers, "0.30", fraction="1")
    await eventually(lambda: old in running.guard.engine)
    await wait_connected(standins.ingest)
    await _book_close(conn)
    await _book_reopen(conn, "50", "0.28")
    new = await _stop(triggers, "0.20", fraction="1")
    for ev in (copy_fill("co_buy1", BUY, filled="100", price="0.40"),
               copy_fill("co_sell1", SELL, filled="100", price="0.35"),
               copy_fill("co_buy2", BUY, filled="50", price="0.28")):
        await standins.executor.emit(ev)
    await eventually(lambda: running.orders.stats.handled >= 3)
    await running.guard.drain()
    copies = await (await conn.execute(
        "SELECT kind, state, trigger_price, sell_fraction FROM triggers WHERE source = 'COPY'")).fetchall()
    assert [tuple(r.values()) for r in copies] == [("STOP_LOSS", "ARMED", Decimal("0.21"), Decimal(1))], copies
    groups = await (await conn.execute("SELECT state, entry_price, position_size FROM guard_position_exits")).fetchall()
    assert [tuple(r.values()) for r in groups] == [("OPEN", Decimal("0.28"), Decimal(50))], groups
    assert {t: (await trigger_row(conn, t))["state"] for t in (old, new)} == {old: "CANCELLED", new: "ARMED"}
    ticks = running.guard.stats.ticks
    await standins.ingest.tick(bid="0.25", ask="0.27")  # under life 1's stops (0.30), over life 2's: nothing sells
    await eventually(lambda: running.guard.stats.ticks > ticks)
    await running.guard.drain()
    assert standins.executor.sells == []
    await conn.close()
