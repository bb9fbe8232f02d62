"""A position closed and opened again (a new life) whose events guard reads late or out of order: the new life gets
the exits of its own time, and every trigger of the life that ended ends with it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from common.storage import create_pool
from services.guard.adapters.exit_store import ExitStore
from services.guard.order_flow import OrderFlow
from tests.guard.standins import (
    ASSET,
    BUY,
    SELL,
    WALLET_ID,
    copy_fill,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
)

pytestmark = pytest.mark.integration


class _Stats(SimpleNamespace):
    def __getattr__(self, name: str) -> int:  # every counter starts at 0
        return 0


class _Engine:
    def __init__(self) -> None:
        self.armed: dict[str, Any] = {}

    def upsert(self, spec: Any, *, armed_ns: int = 0) -> None:
        self.armed[spec.id] = spec

    def remove(self, trigger_id: str) -> None:
        self.armed.pop(trigger_id, None)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self.armed


class _Kick:
    def kick(self) -> None:
        pass


class _Markets:
    async def market(self, _asset: str) -> None:
        return None


@pytest.fixture
async def flow(db_url: str) -> AsyncIterator[OrderFlow]:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    guard = SimpleNamespace(exit_store=ExitStore(pool, lambda: datetime.now(UTC)), stats=_Stats(),
                            engine=_Engine(), markets=_Markets(), outbox=_Kick(), watch=_Kick(),
                            changed=lambda _asset: None, clock_ns=time.time_ns)
    try:
        yield OrderFlow(guard)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def _open_groups(conn: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await (await conn.execute(
        "SELECT oco_group, opening_order_id, position_size FROM guard_position_exits WHERE follower_wallet_id = %s"
        " AND asset_id = %s AND state = 'OPEN'", (WALLET_ID, ASSET))).fetchall()]


async def _armed(conn: Any) -> list[tuple[str, str]]:
    return [(r["id"], r["kind"]) for r in await (await conn.execute(
        "SELECT id, kind FROM triggers WHERE state = 'ARMED' ORDER BY id")).fetchall()]


async def _close_and_reopen(conn: Any) -> None:
    """The executor books the copy SELL of life 1 (size 0) and, later, the copy BUY opening life 2."""
    await set_position(conn, "0", "0.40")
    await set_position(conn, "50", "0.28")
    await conn.execute("UPDATE positions SET opened_at = now() + interval '1 second'"
                       " WHERE follower_wallet_id = %s", (WALLET_ID,))


async def test_the_new_lifes_fill_read_before_the_old_lifes_sell_gets_the_new_lifes_exits(
        db_url: str, flow: OrderFlow) -> None:
    """Life 1 was copied under a subscription without exits (empty group). The user adds a stop-loss. Life 1 is
    sold and life 2 bought. The SELL's append failed (Redis blip, or Redis lost it and it was appended again
    2 s later), so guard reads the BUY of life 2 BEFORE the SELL of life 1. Life 2 must end up with the
    stop-loss, as it does when the events come in order: the quick path resized the ended life's empty group
    for it, and the late SELL then closed that group, leaving life 2 with none."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={})
    await set_position(conn, "100", "0.40")
    await flow.on_events([copy_fill("co_buy1", BUY, filled="100", price="0.40")])
    assert len(await _open_groups(conn)) == 1  # the empty group of life 1
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'", ('{"stopLossPct": "25"}',))
    await _close_and_reopen(conn)
    # out of order: life 2's BUY, then life 1's SELL
    await flow.on_events([copy_fill("co_buy2", BUY, filled="50", price="0.28")])
    await flow.on_events([copy_fill("co_sell1", SELL, filled="100", price="0.35")])
    groups = await _open_groups(conn)
    armed = await _armed(conn)
    await conn.close()
    assert groups and armed, (f"life 2 (50 shares held) has open groups {groups} and armed triggers {armed}: "
                              "the stop-loss configured for new positions was never armed")


async def test_manual_stop_of_a_closed_life_is_cancelled_when_guard_reads_the_sell_after_the_reopening(
        db_url: str, flow: OrderFlow) -> None:
    """A manual stop-loss (at 0.30) guards life 1, bought at 0.40. Handled in time, the SELL that closes life 1
    cancels it (POSITION_CLOSED). Guard reads that SELL only after life 2 was bought at 0.28 (guard lagging or
    restarted): the stop must be cancelled all the same, or it fires at once and sells life 2."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"takeProfitPct": "50"})
    await set_position(conn, "100", "0.40")
    await flow.on_events([copy_fill("co_buy1", BUY, filled="100", price="0.40")])
    await insert_trigger(conn, "trg_manual_sl", "STOP_LOSS", price="0.30", fraction="1")
    await _close_and_reopen(conn)
    await flow.on_events([copy_fill("co_sell1", SELL, filled="100", price="0.35"),
                          copy_fill("co_buy2", BUY, filled="50", price="0.28")])
    armed = await _armed(conn)
    await conn.close()
    assert ("trg_manual_sl", "STOP_LOSS") not in armed, (
        f"armed after life 1 closed: {armed}; the manual stop at 0.30 of life 1 now guards life 2 bought at 0.28")


async def test_in_order_the_closing_sell_cancels_the_manual_stop(db_url: str, flow: OrderFlow) -> None:
    """The same SELL read in time (the position at 0) cancels the manual stop."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"takeProfitPct": "50"})
    await set_position(conn, "100", "0.40")
    await flow.on_events([copy_fill("co_buy1", BUY, filled="100", price="0.40")])
    await insert_trigger(conn, "trg_manual_sl", "STOP_LOSS", price="0.30", fraction="1")
    await set_position(conn, "0", "0.40")
    await flow.on_events([copy_fill("co_sell1", SELL, filled="100", price="0.35")])
    armed = await _armed(conn)
    await conn.close()
    assert armed == []


async def test_in_order_the_new_life_gets_the_stop_loss(db_url: str, flow: OrderFlow) -> None:
    """The same events in order (the SELL of life 1, then the BUY of life 2) arm the stop-loss for life 2."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={})
    await set_position(conn, "100", "0.40")
    await flow.on_events([copy_fill("co_buy1", BUY, filled="100", price="0.40")])
    await conn.execute("UPDATE subscriptions SET exits = %s::jsonb WHERE id = 'sub_1'", ('{"stopLossPct": "25"}',))
    await _close_and_reopen(conn)
    await flow.on_events([copy_fill("co_sell1", SELL, filled="100", price="0.35")])
    await flow.on_events([copy_fill("co_buy2", BUY, filled="50", price="0.28")])
    armed = await _armed(conn)
    await conn.close()
    assert [k for _i, k in armed] == ["STOP_LOSS"]


@pytest.mark.parametrize("control_clock_s", [5, -5], ids=["ahead", "behind"])
async def test_a_trigger_belongs_to_the_life_it_was_made_for_whatever_the_creating_clock(
        db_url: str, flow: OrderFlow, control_clock_s: int) -> None:
    """Control's clock differs from the database's by a few seconds. A manual stop made for life 1 ends with life 1,
    and one the user set on life 2 (after its reopening, before guard read life 1's closing SELL) stays armed: the
    life is the position's opening time the trigger recorded, not control's clock against the database's."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={})
    await set_position(conn, "100", "0.40")
    await flow.on_events([copy_fill("co_buy1", BUY, filled="100", price="0.40")])
    skewed = datetime.now(UTC) + timedelta(seconds=control_clock_s)
    await insert_trigger(conn, "trg_life1", "STOP_LOSS", price="0.30", fraction="1", created=skewed)
    await _close_and_reopen(conn)
    later = skewed + timedelta(milliseconds=100)
    await insert_trigger(conn, "trg_life2", "STOP_LOSS", price="0.20", fraction="1", created=later)
    await flow.on_events([copy_fill("co_sell1", SELL, filled="100", price="0.35")])
    armed = [i for i, _k in await _armed(conn)]
    await conn.close()
    assert armed == ["trg_life2"], f"armed {armed}: life 1's stop must end with it, life 2's must stay"
