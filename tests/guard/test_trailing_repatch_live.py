"""A PATCH raising a live trailing stop's ``activationPrice`` above its high-water mark, end to end with the real
control, PostgreSQL and Redis: the old stop level no longer fires (in guard's memory, after a restart, after a fire
that raced the PATCH), a mark guard tracked before the PATCH never undoes the reset in PostgreSQL, and once the
price reaches the new activation price the stop trails from there and fires once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from services.guard.adapters.trigger_store import TriggerStore
from services.guard.app import Running
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    TOKEN,
    WALLET,
    WALLET_ID,
    StandIns,
    add_market,
    db,
    insert_trigger,
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
D = Decimal


@pytest.fixture
async def conn(db_url: str, redis: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    c = await db(db_url)
    await set_position(c, "100")
    await add_market(redis, min_size="1")
    yield c
    await c.close()


async def create_stop(triggers: pb_grpc.TriggerServiceStub, guard: Running) -> str:
    """Activation 0.70, trail 10%, the whole position; armed in guard."""
    made = await triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=tpb.Trigger(
        wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET, kind=tpb.TRIGGER_KIND_TRAILING_STOP,
        trail_pct="10", activation_price="0.70", sell_fraction="1")), metadata=AUTH)
    await eventually(lambda: made.id in guard.guard.engine)
    return made.id


async def raise_activation(triggers: pb_grpc.TriggerServiceStub, guard: Running, tid: str) -> None:
    """PATCH activationPrice 0.90 (above the mark): answered and reloaded with the mark reset."""
    patched = await triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=tid, trigger=tpb.Trigger(
        activation_price="0.90")), metadata=AUTH)
    assert (patched.activation_price, patched.high_water_mark) == ("0.9", "0")
    await eventually(lambda: (s := guard.guard.engine.get(tid)) is not None and s.activation_price == D("0.9"))
    spec = guard.guard.engine.get(tid)
    assert spec is not None and spec.high_water_mark == 0


async def quiet(standins: StandIns, guard: Running, *bids: str) -> None:
    """Ticks at ``bids`` (the ask a cent above) are evaluated and sell nothing."""
    seen = guard.guard.stats.ticks
    for bid in bids:
        await standins.ingest.tick(bid=bid, ask=str(D(bid) + D("0.01")))
    # each handled in turn: a fire one started is a task of guard's, over once drained
    await eventually(lambda: guard.guard.stats.ticks >= seen + len(bids))
    await guard.guard.drain()
    assert standins.executor.sells == []


async def trails_from_the_new_activation(conn: Any, standins: StandIns, guard: Running, tid: str) -> None:
    """0.90 activates the stop (mark 0.90), 0.82 is above 0.90 x 0.9, 0.81 sells the position once."""
    await quiet(standins, guard, "0.72", "0.60", "0.89", "0.90", "0.82")
    assert (s := guard.guard.engine.get(tid)) is not None and s.high_water_mark == D("0.90")
    await standins.ingest.tick(bid="0.81", ask="0.83")
    await eventually(lambda: len(standins.executor.sells) == 1)
    await eventually(lambda: _state_is(conn, tid, "DONE"))
    await quiet_after_fire(standins, guard)
    row = await trigger_row(conn, tid)
    assert (row["fire_count"], row["high_water_mark"], row["fire_price"]) == (1, D("0.90"), D("0.81"))
    assert [(s.trigger_id, s.size) for s in standins.executor.sells] == [(tid, "100")]


async def _state_is(conn: Any, tid: str, state: str) -> bool:
    return bool((await trigger_row(conn, tid))["state"] == state)


async def quiet_after_fire(standins: StandIns, guard: Running) -> None:
    """A lower tick after the fire sends nothing more."""
    seen = guard.guard.stats.ticks
    await standins.ingest.tick(bid="0.50", ask="0.52")
    await eventually(lambda: guard.guard.stats.ticks > seen)
    await guard.guard.drain()


async def risen_to(conn: Any, standins: StandIns, guard: Running, tid: str, mark: str) -> None:
    """Ticks activate the stop and lift its mark to ``mark``, saved in PostgreSQL."""
    await wait_connected(standins.ingest)
    for bid in ("0.75", mark):
        await standins.ingest.tick(bid=bid, ask=str(D(bid) + D("0.02")))
    await eventually(lambda: (s := guard.guard.engine.get(tid)) is not None and s.high_water_mark == D(mark))
    await guard.guard.flush_marks()
    assert (await trigger_row(conn, tid))["high_water_mark"] == D(mark)


async def test_raised_activation_stops_the_old_level_then_trails_from_the_new_one(
        conn: Any, standins: StandIns, triggers: pb_grpc.TriggerServiceStub, make_guard: GuardFactory) -> None:
    running = await make_guard()
    tid = await create_stop(triggers, running)
    await risen_to(conn, standins, running, tid, "0.80")  # fires at 0.72 from here
    await raise_activation(triggers, running, tid)
    assert (await trigger_row(conn, tid))["high_water_mark"] == 0
    await trails_from_the_new_activation(conn, standins, running, tid)


async def test_a_stale_mark_write_and_a_restart_keep_the_reset(
        conn: Any, standins: StandIns, triggers: pb_grpc.TriggerServiceStub, make_guard: GuardFactory) -> None:
    """Guard took the mark 0.85 for its batched write before the PATCH and writes it after: PostgreSQL keeps the
    reset, and the next guard loads the stop inactive."""
    first = await make_guard(mark_flush_s=3600.0)  # flushed by hand
    tid = await create_stop(triggers, first)
    await risen_to(conn, standins, first, tid, "0.80")
    await raise_activation(triggers, first, tid)
    await first.guard.store.save_marks([(D("0.85"), [tid])])  # the stale batch
    assert (await trigger_row(conn, tid))["high_water_mark"] == 0
    await first.stop()
    second = await make_guard()
    spec = second.guard.engine.get(tid)
    assert spec is not None and (spec.activation_price, spec.high_water_mark) == (D("0.9"), 0)
    await wait_connected(standins.ingest)
    await trails_from_the_new_activation(conn, standins, second, tid)


async def test_a_mark_write_waiting_for_the_patch_does_not_undo_its_reset(
        conn: Any, db_url: str, trigger_store: TriggerStore) -> None:
    """The batched write of a mark taken before the PATCH waits for the row lock the PATCH holds; PostgreSQL checks
    its condition again on the row the PATCH committed, which no longer takes a mark below 0.90."""
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", activation="0.70", fraction="1", mark="0.80")
    async with await psycopg.AsyncConnection.connect(db_url) as patch:
        async with patch.transaction():  # control's PATCH: the row locked, its values and the reset mark written
            await patch.execute("SELECT * FROM triggers WHERE id = 'trg_tr' FOR UPDATE")
            await patch.execute("UPDATE triggers SET activation_price = 0.90, high_water_mark = LEAST("
                                "high_water_mark, 0), version = version + 1 WHERE id = 'trg_tr'")
            write = asyncio.create_task(trigger_store.save_marks([(D("0.85"), ["trg_tr"])]))

            async def write_waits_for_a_lock() -> bool:
                row = await (await conn.execute("SELECT count(*) AS n FROM pg_locks WHERE NOT granted")).fetchone()
                return row is not None and row["n"] > 0

            await eventually(write_waits_for_a_lock, message="the mark write never waited for the PATCH's lock")
            assert not write.done()  # waiting for the PATCH's lock
        await write
    assert (await trigger_row(conn, "trg_tr"))["high_water_mark"] == 0
    await trigger_store.save_marks([(D("0.92"), ["trg_tr"])])  # a mark past the new activation price is kept
    assert (await trigger_row(conn, "trg_tr"))["high_water_mark"] == D("0.92")


async def test_a_fire_racing_the_patch_rearms_the_stop_without_its_old_mark(
        conn: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """Control committed the PATCH (activation 0.90, mark reset) but guard has not reloaded it: a tick at the old
    level 0.72 fires in the engine, the fire finds the row changed and re-arms it with the mark it fired at (0.80).
    That mark is below the new activation price: dropped, not written back, and 0.71 sends nothing."""
    tid = await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", activation="0.70", fraction="1",
                               mark="0.80")
    running = await make_guard()
    await wait_connected(standins.ingest)
    await quiet(standins, running, "0.79")
    # control's PATCH, committed; its notification is still on its way (never delivered here)
    await conn.execute("UPDATE triggers SET activation_price = 0.90, high_water_mark = 0, version = version + 1,"
                       " update_time = now() WHERE id = %s", (tid,))
    await quiet(standins, running, "0.72")
    await eventually(lambda: running.guard.firer.stats.changed == 1)
    await eventually(lambda: (s := running.guard.engine.get(tid)) is not None and s.activation_price == D("0.9"))
    await running.guard.drain()
    spec = running.guard.engine.get(tid)
    assert spec is not None and spec.high_water_mark == 0
    assert (await trigger_row(conn, tid))["high_water_mark"] == 0
    await quiet(standins, running, "0.71")
    await trails_from_the_new_activation(conn, standins, running, tid)
