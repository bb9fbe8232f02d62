"""Races around a fire, on real PostgreSQL and Redis with stand-in ingest and executor: a SELL sent by a fire
that was not recorded settles when the row fires again; a PATCH committed before guard reloads it is honoured;
a closing fire that sells nothing leaves its OCO siblings armed; a subscription DELETE racing a fire never
ends with a SELL at the venue and its trigger recorded CANCELLED."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from services.guard.domain.trigger_rows import client_order_id
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    WALLET,
    WALLET_ID,
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


async def test_refire_after_unrecorded_sell_settles_instead_of_staying_fired_forever(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Guard died after SubmitOrder started but before the FIRED row committed: the SELL (co(trg, 1)) filled
    and the restarted guard's order consumer handled its events while the row was still ARMED (a no-op). The
    next crossing fires the row again with the same client order id; the executor's answer (duplicate, with
    that same FILLED event) settles it DONE rather than being dropped as an event seen before."""
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="0.5")
    # what the killed guard had already sent: half of 100 shares, same id the next fire will compute
    first = epb.Order(client_order_id=client_order_id("trg_sl", 1), origin=epb.ORDER_ORIGIN_TRIGGER,
                      follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=ASSET, condition_id=CONDITION,
                      side=cpb.SIDE_SELL, order_type=epb.ORDER_TYPE_FAK, size="50", reference_price="0.3",
                      mode=cpb.EXECUTION_MODE_PAPER, trigger_id="trg_sl")
    await standins.executor._submit(first)  # PLACED + FILLED on the log; the position is now 50

    running = await make_guard()
    # the restarted guard's order consumer reads both events (start: oldest) while the row is ARMED
    await eventually(lambda: running.guard.stats.order_events >= 2)
    assert (await trigger_row(conn, "trg_sl"))["state"] == "ARMED"

    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.25", ask="0.3")  # crosses again
    await eventually(lambda: len(standins.executor.calls) == 2)
    assert standins.executor.calls[1].duplicate  # nothing new reached the venue (sound)
    await running.guard.drain()

    async def settled() -> bool:
        return (await trigger_row(conn, "trg_sl"))["state"] != "FIRED"

    try:
        await eventually(settled, timeout_s=5)
    except AssertionError:
        row = await trigger_row(conn, "trg_sl")
        pytest.fail(f"trigger stuck in FIRED: order {row['order_id']} already FILLED, the executor's answer was "
                    f"dropped as a repeated event (state={row['state']}, fire_size={row['fire_size']}, "
                    f"repeated_events={running.guard.stats.repeated_events})")
    finally:
        await conn.close()


async def test_patch_committed_by_control_is_honoured_by_a_fire_in_the_reload_window(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Control PATCHes a stop-loss from 0.40 down to 0.20 and answers; before guard has reloaded it, a tick at
    0.35 crosses the old level in the engine. The fire reads the row under its lock, sees that 0.20 is not
    crossed at 0.35 and sends nothing; the trigger stays ARMED at 0.20 (and sells once 0.20 is crossed)."""
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.40", fraction="1")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.45", ask="0.5")
    await eventually(lambda: running.guard.stats.ticks >= 1)
    # control's PATCH, committed; its notification is still on its way (not yet applied by guard)
    await conn.execute("UPDATE triggers SET trigger_price = 0.20, version = version + 1, update_time = now()"
                       " WHERE id = 'trg_sl' AND state = 'ARMED'")
    await standins.ingest.tick(bid="0.35", ask="0.4")  # above the new 0.20 stop: must not sell
    # the engine fired on the old level and the fire has decided (sold nothing: the row changed); its task and
    # the re-arm it started are over once drained
    await eventually(lambda: running.guard.firer.stats.decided >= 1)
    await running.guard.drain()
    row = await trigger_row(conn, "trg_sl")
    assert standins.executor.sells == []
    assert (row["state"], row["trigger_price"], row["fire_count"]) == ("ARMED", Decimal("0.20"), 0)
    assert running.guard.firer.stats.changed == 1
    await standins.ingest.tick(bid="0.19", ask="0.2")  # the stop as stored now is crossed

    async def sold() -> bool:
        return (await trigger_row(conn, "trg_sl"))["state"] == "DONE"

    await eventually(sold)
    assert [s.size for s in standins.executor.sells] == ["100"]
    await conn.close()


async def test_a_closing_trigger_that_sends_nothing_does_not_cancel_its_oco_siblings(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """TP (3 shares, below the market minimum of 5) and SL (whole position) in one OCO group on 100 shares: the
    TP crosses and is FAILED / SIZE_BELOW_MIN_ORDER, selling nothing; the SL stays ARMED (in PostgreSQL and in
    the engine) and sells the 100 shares when the price crashes through it."""
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.70", size="3", oco="grp_x")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1", oco="grp_x")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.75", ask="0.8")

    async def tp_failed() -> bool:
        return (await trigger_row(conn, "trg_tp"))["state"] == "FAILED"

    await eventually(tp_failed)
    await running.guard.drain()
    assert standins.executor.calls == []  # the TP sold nothing
    await standins.ingest.tick(bid="0.2", ask="0.25")  # the stop-loss level is crossed

    async def sl_fired() -> bool:
        return (await trigger_row(conn, "trg_sl"))["state"] != "ARMED"

    try:
        await eventually(sl_fired)
    except AssertionError:
        pytest.fail(f"the stop-loss never fired: {await trigger_row(conn, 'trg_sl')}")
    await running.guard.drain()  # its SELL answered
    sl = await trigger_row(conn, "trg_sl")
    await conn.close()
    assert sl["state"] in ("FIRED", "DONE")
    assert [(s.trigger_id, s.size) for s in standins.executor.sells] == [("trg_sl", "100")]


async def test_subscription_delete_racing_a_fire_never_leaves_a_sold_trigger_cancelled(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """DELETE /subscriptions/{id} (control locks the subscription's ARMED triggers in id order, cancels them and
    answers) races the fire of trg_b, whose OCO sibling trg_a control has locked first. The fire takes every
    row lock it needs (trg_b and trg_a, in id order) before it sends anything, so it waits behind control
    instead of deadlocking after its SELL is out; control's cancel wins, and no SELL goes out."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1")
    await set_position(conn, "100")
    await add_market(redis)
    await insert_trigger(conn, "trg_a", "STOP_LOSS", price="0.30", fraction="1", oco="grp_d", subscription_id="sub_1")
    await insert_trigger(conn, "trg_b", "TAKE_PROFIT", price="0.70", fraction="1", oco="grp_d",
                         subscription_id="sub_1")
    running = await make_guard()
    await wait_connected(standins.ingest)
    ctl_conn = await psycopg.AsyncConnection.connect(db_url)  # control's transaction
    try:
        # control's "... WHERE subscription_id = ... AND state = 'ARMED' ORDER BY id FOR UPDATE" has locked
        # trg_a (first in id order) when trg_b crosses
        await ctl_conn.execute("SELECT id FROM triggers WHERE id = 'trg_a' FOR UPDATE")
        await standins.ingest.tick(bid="0.75", ask="0.8")

        async def fire_waits_for_a_lock() -> bool:
            row = await (await conn.execute("SELECT count(*) AS n FROM pg_locks WHERE NOT granted")).fetchone()
            return row is not None and row["n"] > 0

        await eventually(fire_waits_for_a_lock)
        assert standins.executor.calls == []  # nothing is sent while the fire waits
        await ctl_conn.execute("SELECT id FROM triggers WHERE subscription_id = 'sub_1' AND state = 'ARMED'"
                               " ORDER BY id FOR UPDATE")
        await ctl_conn.execute("UPDATE triggers SET state = 'CANCELLED', state_reason = 'SUBSCRIPTION_STOPPED',"
                               " update_time = now(), version = version + 1"
                               " WHERE subscription_id = 'sub_1' AND state = 'ARMED'")
        await ctl_conn.commit()  # control answers the DELETE
    finally:
        await ctl_conn.close()
    await eventually(lambda: running.guard.firer.stats.lost_race == 1)
    await running.guard.drain()
    rows = [await trigger_row(conn, t) for t in ("trg_a", "trg_b")]
    await conn.close()
    assert standins.executor.calls == []
    assert [(r["state"], r["state_reason"], r["fire_count"]) for r in rows] == [
        ("CANCELLED", "SUBSCRIPTION_STOPPED", 0)] * 2
    assert running.guard.firer.stats.record_errors == 0
