"""A resync (a version gap, the periodic check, a lost notification) racing guard's own changes of the engine: what
the engine took, changed or dropped while the snapshot of ARMED triggers was read is not undone by that snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from services.guard.domain.trigger_index import Engine, Prices
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    BUY,
    StandIns,
    add_market,
    copy_fill,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import eventually

D = Decimal


def _sl(tid: str, price: str) -> TriggerSpec:
    return TriggerSpec(tid, "asset-1", Kind.STOP_LOSS, trigger_price=D(price))


def test_the_engine_notes_the_triggers_taken_changed_or_dropped_inside_a_noting_block() -> None:
    engine = Engine()
    engine.upsert(_sl("kept", "0.10"))
    engine.upsert(_sl("dropped", "0.20"))
    engine.upsert(_sl("fired", "0.30"))
    with engine.noting() as noted:
        engine.upsert(_sl("new", "0.05"))
        engine.remove("dropped")
        fired = engine.on_tick("asset-1", Prices(best_bid=D("0.25")), stale=False).fired
    engine.upsert(_sl("later", "0.01"))
    assert [f.spec.id for f in fired] == ["fired"]
    assert noted == {"new", "dropped", "fired"}


class _Resyncs:
    """Holds each snapshot read until released, and tells when a resync has ended."""

    def __init__(self, guard: Any) -> None:
        self.loaded, self.release = asyncio.Event(), asyncio.Event()
        self.ended = 0
        real_load: Callable[[], Awaitable[Any]] = guard.store.load_armed
        real_resync: Callable[[], Awaitable[tuple[int, int]]] = guard.changes.resync

        async def slow_load() -> Any:
            specs = await real_load()
            self.loaded.set()
            await self.release.wait()
            return specs

        async def resync() -> tuple[int, int]:
            out = await real_resync()
            self.ended += 1
            return out

        guard.store.load_armed = slow_load
        guard.changes.resync = resync


@pytest.mark.integration
async def test_copy_exits_registered_while_a_resync_reads_its_snapshot_stay_watched(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25"})
    await add_market(redis)
    guard = (await make_guard()).guard
    await wait_connected(standins.ingest)
    resyncs = _Resyncs(guard)
    await redis.incr("tt:triggers:version")  # a change whose notification was lost: the version check resyncs
    await asyncio.wait_for(resyncs.loaded.wait(), 5)

    # meanwhile the executor books a copy BUY: guard registers the position's stop-loss (0.30)
    await set_position(conn, "100", "0.40")
    await guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    rows = await (await conn.execute("SELECT id FROM triggers WHERE source = 'COPY' AND state = 'ARMED'")).fetchall()
    exit_ids = {r["id"] for r in rows}
    assert exit_ids and exit_ids <= guard.engine.ids()

    resyncs.release.set()
    await eventually(lambda: resyncs.ended >= 1)
    assert exit_ids <= guard.engine.ids()
    await standins.ingest.tick(bid="0.20", ask="0.22")  # through the 0.30 stop
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await conn.close()


@pytest.mark.integration
async def test_a_trigger_that_fired_while_a_resync_read_its_snapshot_is_not_armed_again(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.40")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    guard = (await make_guard()).guard
    await wait_connected(standins.ingest)
    resyncs = _Resyncs(guard)
    await redis.incr("tt:triggers:version")
    await asyncio.wait_for(resyncs.loaded.wait(), 5)  # the snapshot has it ARMED

    await standins.ingest.tick(bid="0.20", ask="0.22")
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await eventually(lambda: not guard.firer.in_flight)
    assert (await trigger_row(conn, "trg_sl"))["state"] != "ARMED"

    resyncs.release.set()
    await eventually(lambda: resyncs.ended >= 1)
    assert "trg_sl" not in guard.engine.ids()
    await conn.close()
