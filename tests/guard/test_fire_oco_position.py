"""A closing fire cancels, in its own transaction, every ARMED member of its OCO group on its position as PostgreSQL
has them, not only the siblings the engine passed: one the engine did not know yet (control created it and guard
has not synced it, or another guard of a rollout armed it) would stay ARMED on a position sold in full and fire
later on a new position in the same asset. Same-named triggers on another asset or in another wallet are left
alone. A create joining the group (control takes the group's lock) is either seen and cancelled or comes after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services.control import trigger_repo
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.fire_records import FireDecision, FireFacts
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import State
from services.guard.domain.trigger_rows import TriggerRow
from tests.executor.conftest import rows
from tests.guard.standins import ASSET, WALLET, WALLET_ID, db, insert_trigger, set_position
from tests.guard.test_lock_order_triggers import store
from tests.helpers import eventually
from tests.lock_race import lock_waiters, race_at_gate
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration
__all__ = ["store"]  # the fixture, on a pool planned as guard's

OTHER_ASSET = "7" * 70
BOB, BOB_ID = "0x" + "b" * 40, "w_bob"


def _sell(row: TriggerRow, facts: FireFacts) -> FireDecision:
    return FireDecision(State.FIRED, "", facts.held, facts.held, f"co_{row.id}", b"")


async def _group(db_url: str) -> None:
    """A position of 100 shares guarded by trg_tp, trg_sl and a partial rung in group g; same-named members on
    another asset and in Bob's wallet; a stop of another group and one of none."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.70", fraction="1", oco="g")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1", oco="g")
    await insert_trigger(conn, "trg_rung", "TAKE_PROFIT", price="0.60", fraction="0.5", oco="g")
    await insert_trigger(conn, "trg_far", "STOP_LOSS", price="0.30", fraction="1", oco="g", asset_id=OTHER_ASSET)
    await insert_trigger(conn, "trg_bob", "STOP_LOSS", price="0.30", fraction="1", oco="g")
    await conn.execute("UPDATE triggers SET wallet = %s, follower_wallet_id = %s WHERE id = 'trg_bob'", (BOB, BOB_ID))
    await insert_trigger(conn, "trg_h", "STOP_LOSS", price="0.30", fraction="1", oco="h")
    await insert_trigger(conn, "trg_none", "STOP_LOSS", price="0.30", fraction="1")
    await conn.close()


def _states(db_url: str) -> dict[str, tuple[str, str]]:
    return {r[0]: (r[1], r[2]) for r in rows(db_url, "SELECT id, state, state_reason FROM triggers")}


CANCELLED = ("CANCELLED", "OCO_SIBLING_FIRED")
ARMED = ("ARMED", "")


async def test_a_closing_fire_cancels_its_positions_siblings_the_engine_did_not_pass(db_url: str,
                                                                                     store: TriggerStore) -> None:
    await _group(db_url)
    result = await store.fire("trg_tp", [], D(0), TickInfo(D("0.70")), _sell)
    assert [r.id for r in result.cancelled] == ["trg_rung", "trg_sl"]
    assert all(r.state is State.CANCELLED for r in result.cancelled)
    assert _states(db_url) == {"trg_tp": ("FIRED", ""), "trg_sl": CANCELLED, "trg_rung": CANCELLED,
                               "trg_far": ARMED, "trg_bob": ARMED, "trg_h": ARMED, "trg_none": ARMED}
    assert sorted(r[0] for r in rows(db_url, "SELECT trigger_id FROM guard_trigger_events")) == [
        "trg_rung", "trg_sl", "trg_tp"]


async def test_a_partial_fire_cancels_no_sibling(db_url: str, store: TriggerStore) -> None:
    await _group(db_url)
    result = await store.fire("trg_rung", [], D(0), TickInfo(D("0.60")), _sell)
    assert result.row is not None and result.cancelled == ()
    assert {t for t, s in _states(db_url).items() if s != ARMED} == {"trg_rung"}


def _created(trigger_id: str) -> tpb.Trigger:
    """What control's CreateTrigger writes: a stop-loss joining group g on the position."""
    t = tpb.Trigger(id=trigger_id, wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET,
                    kind=tpb.TRIGGER_KIND_STOP_LOSS, trigger_price="0.2", sell_fraction="1", oco_group="g",
                    price_source=tpb.PRICE_SOURCE_BEST_BID, state=tpb.TRIGGER_STATE_ARMED,
                    source=tpb.TRIGGER_SOURCE_MANUAL)
    now = datetime.now(UTC)
    t.create_time.FromDatetime(now)
    t.update_time.FromDatetime(now)
    return t


async def _create(db_url: str, trigger_id: str, conn: Any = None) -> None:
    """Control's create in the group: the group's lock, the check of other positions, the insert."""
    own = conn is None
    conn = conn or await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row)
    try:
        async with conn.transaction():
            created = _created(trigger_id)
            assert await trigger_repo.armed_elsewhere_in_group(conn, created) is not None  # trg_far / trg_bob
            await trigger_repo.insert(conn, created)
    finally:
        if own:
            await conn.close()


async def test_a_fire_waits_for_a_create_joining_its_group_and_cancels_it(db_url: str, store: TriggerStore) -> None:
    await _group(db_url)
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as ctl:
        await ctl.execute("BEGIN")
        created = _created("trg_new")
        await trigger_repo.armed_elsewhere_in_group(ctl, created)  # control holds the group's lock
        await trigger_repo.insert(ctl, created)
        fire = asyncio.create_task(store.fire("trg_tp", ["trg_sl"], D(0), TickInfo(D("0.70")), _sell))
        await eventually(lambda: fire.done() or lock_waiters(db_url) == 1)
        assert not fire.done()
        await ctl.execute("COMMIT")
    result = await fire
    assert [r.id for r in result.cancelled] == ["trg_new", "trg_rung", "trg_sl"]
    assert _states(db_url)["trg_new"] == CANCELLED


async def test_a_fire_and_a_create_in_its_group_do_not_deadlock(db_url: str, store: TriggerStore) -> None:
    """The fire holds the group's lock and waits for trg_sl (control is changing it); control's create waits for
    the group's lock: both end, the create after the fire."""
    await _group(db_url)
    outcome = await race_at_gate(db_url, "SELECT 1 FROM triggers WHERE id = 'trg_sl' FOR UPDATE",
                                 lambda: store.fire("trg_tp", [], D(0), TickInfo(D("0.70")), _sell),
                                 lambda: _create(db_url, "trg_new"))
    assert outcome == ["", ""]
    states = _states(db_url)
    assert (states["trg_sl"], states["trg_rung"], states["trg_new"]) == (CANCELLED, CANCELLED, ARMED)
