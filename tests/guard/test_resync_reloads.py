"""The triggers a resync reads again after its snapshot (those the engine took, changed or dropped while it was
read: a fan-out's copy exits) are read in batches, with the rules of a single reload, so the control notices
queued behind the resync wait for a few round trips, not for one per trigger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.conftest import GuardFactory
from tests.guard.standins import ASSET, WALLET, WALLET_ID, StandIns, db, insert_trigger

pytestmark = pytest.mark.integration

FAN_OUT = 20_000  # 10,000 positions' copy exits (stop-loss + take-profit)


class _Reads:
    """Counts the store's trigger reads."""

    def __init__(self, store: Any) -> None:
        self.single = self.batches = 0
        get, get_many = store.get, store.get_many

        async def one(tid: str) -> Any:
            self.single += 1
            return await get(tid)

        async def many(ids: Any, **kw: Any) -> Any:
            self.batches += 1
            return await get_many(ids, **kw)

        store.get, store.get_many = one, many


async def test_a_resync_after_a_fan_out_reads_the_exits_it_took_in_batches(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    guard = (await make_guard(trigger_check_s=600.0)).guard  # no sweep of unwatched triggers reads them meanwhile
    conn = await db(db_url)
    await conn.execute(
        "INSERT INTO triggers (id, wallet, follower_wallet_id, asset_id, kind, trigger_price, sell_fraction,"
        " price_source, state, source, create_time, update_time)"
        " SELECT 'trg_fan_' || lpad(i::text, 5, '0'), %s, %s, 'asset-' || (i / 2), 'STOP_LOSS', 0.25, 1,"
        " 'BEST_BID', 'ARMED', 'COPY', now(), now() FROM generate_series(0, %s) AS i", (WALLET, WALLET_ID, FAN_OUT - 1))
    await conn.close()
    real_load = guard.store.load_armed

    async def load_during_fan_out() -> Any:
        specs = await real_load()
        for i in range(FAN_OUT):  # registered meanwhile: the engine took them at a price changed since
            guard.engine.upsert(TriggerSpec(f"trg_fan_{i:05d}", f"asset-{i // 2}", Kind.STOP_LOSS,
                                            trigger_price=Decimal("0.30")))
        return [s for s in specs if not s.id.startswith("trg_fan_")]

    guard.store.load_armed = load_during_fan_out  # type: ignore[method-assign]
    reads = _Reads(guard.store)
    await guard.changes.resync()
    assert (reads.single, reads.batches) == (0, FAN_OUT // 1000)
    assert {guard.engine.get(f"trg_fan_{i:05d}").trigger_price for i in range(FAN_OUT)} == {  # type: ignore[union-attr]
        Decimal("0.25")}


async def test_the_triggers_read_again_keep_the_rules_of_a_reload(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    guard = (await make_guard()).guard
    conn = await db(db_url)
    await insert_trigger(conn, "trg_firing", "STOP_LOSS", price="0.20", fraction="1")
    await insert_trigger(conn, "trg_held", "STOP_LOSS", price="0.20", fraction="1")
    await conn.execute("UPDATE triggers SET state_reason = 'BOOK_STALE' WHERE id = 'trg_held'")
    await insert_trigger(conn, "trg_gone", "STOP_LOSS", price="0.20", fraction="1")
    await conn.execute("UPDATE triggers SET state = 'CANCELLED' WHERE id = 'trg_gone'")
    await insert_trigger(conn, "trg_trail", "TRAILING_STOP", trail="0.1", fraction="1", mark="0.50")
    await conn.close()
    engine = guard.engine
    for tid in ("trg_firing", "trg_gone", "trg_never_stored"):
        engine.upsert(TriggerSpec(tid, ASSET, Kind.STOP_LOSS, trigger_price=Decimal("0.10")))
    engine.upsert(TriggerSpec("trg_trail", ASSET, Kind.TRAILING_STOP, trail_pct=Decimal("0.1"),
                              high_water_mark=Decimal("0.70")))  # tracked higher than stored
    engine.remove("trg_held")
    guard.firer.in_flight.add("trg_firing")  # a fire of it is being recorded: the fire decides
    await guard.changes.reload_many(sorted(["trg_firing", "trg_held", "trg_gone", "trg_trail", "trg_never_stored"]))
    guard.firer.in_flight.discard("trg_firing")
    assert engine.get("trg_firing") == TriggerSpec("trg_firing", ASSET, Kind.STOP_LOSS, trigger_price=Decimal("0.10"))
    assert engine.get("trg_held") is not None and engine.holds(ASSET)
    assert (engine.get("trg_gone"), engine.get("trg_never_stored")) == (None, None)
    assert engine.get("trg_trail").high_water_mark == Decimal("0.70")  # type: ignore[union-attr]
