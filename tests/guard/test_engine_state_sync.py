"""Guard's engine kept in line with PostgreSQL and the market: a market resolution takes the asset's triggers
out before the next tick of the same batch is evaluated; a trigger held on a stale book stays held across a
PATCH and a restart, so the next fresh tick releases it (its status stops saying the book is stale)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.guard.coordinator import Guard
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.conftest import GuardFactory
from tests.guard.inprocess import FakeStore, in_process_guard, price_tick
from tests.guard.standins import StandIns, add_market, db, insert_trigger, set_position, trigger_row, wait_connected
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-1"
B = "asset-2"
COND = "0xcond"
D = Decimal


def _guard(specs: list[TriggerSpec]) -> tuple[Guard, FakeStore]:
    return in_process_guard(specs, stub_fires=True)


def _tick(bid: str, *, age_s: float = 0.0, asset: str = A, kind: int = mpb.TICK_KIND_PRICE_CHANGE,
          winning: str = "") -> mpb.PriceTick:
    return price_tick(bid, asset, age_s=age_s, kind=kind, condition=COND, winning=winning)


async def test_a_tick_handled_right_after_market_resolved_must_not_fire() -> None:
    """The tick feed hands a whole batch to handle_tick without awaiting: a price tick right behind
    MARKET_RESOLVED must find the market's triggers gone from the engine (they are CANCELLED with
    MARKET_RESOLVED), not fire a SELL on a resolved market."""
    guard, store = _guard([TriggerSpec("tp", A, Kind.TAKE_PROFIT, trigger_price=D("0.90")),
                           TriggerSpec("sl", B, Kind.STOP_LOSS, trigger_price=D("0.20"))])
    guard.handle_tick(_tick("0.50"))
    guard.handle_tick(_tick("0.50", asset=B))
    # the market resolves (A wins); the next ticks of the same batch are handled before any await
    guard.handle_tick(_tick("0.50", kind=mpb.TICK_KIND_MARKET_RESOLVED, winning=A))
    out_a = guard.handle_tick(_tick("0.95"))
    out_b = guard.handle_tick(_tick("0.05", asset=B))
    await guard.drain()
    assert store.cancelled_assets == [[A, B]]
    assert [f.spec.id for f in out_a.fired] == []
    assert [f.spec.id for f in out_b.fired] == []
    assert len(guard.engine) == 0


async def test_a_held_trigger_patched_while_held_is_released_by_the_next_fresh_tick() -> None:
    """A PATCH of a held trigger (reload upserts the new version; control's PATCH keeps state_reason
    BOOK_STALE) keeps it held, so the next fresh tick releases it."""
    guard, store = _guard([TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.40"))])
    guard.handle_tick(_tick("0.50"))
    held = guard.handle_tick(_tick("0.35", age_s=5))  # stale crossing price: held (row -> BOOK_STALE)
    assert [h.spec.id for h in held.held] == ["s"]
    # the user PATCHes the stop-loss down to 0.30 while it is held; reload applies it as TriggerChanges.reload does
    guard.engine.upsert(TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.30")))
    guard.changed(A)
    out = guard.handle_tick(_tick("0.45"))  # fresh, does not cross: the hold must be released
    await guard.drain()
    assert store.holds[0] == (["s"], True)
    assert (["s"], False) in store.holds
    assert [s.id for s in out.released] == ["s"]


# on real PostgreSQL and Redis


@pytest.mark.integration
async def test_a_trigger_held_when_guard_stopped_is_released_by_a_fresh_tick_after_the_restart(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A row ARMED with state_reason BOOK_STALE (held by the previous process) is held again after the start-up
    load, so a fresh price that crosses nothing releases it."""
    conn = await db(db_url)
    await set_position(conn, "10")
    await add_market(redis, min_size="1")
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    # the previous guard process held it on a stale book, then stopped
    await conn.execute("UPDATE triggers SET state_reason = 'BOOK_STALE' WHERE id = 'trg_sl'")
    running = await make_guard()
    await wait_connected(standins.ingest)
    seen = running.guard.stats.ticks
    await standins.ingest.tick(bid="0.50", ask="0.52")  # fresh, nowhere near the stop
    await eventually(lambda: running.guard.stats.ticks > seen)
    await running.guard.drain()

    async def released() -> bool:
        return (await trigger_row(conn, "trg_sl"))["state_reason"] == ""

    try:
        await eventually(released, timeout_s=3.0)
    finally:
        row = await trigger_row(conn, "trg_sl")
        await conn.close()
    assert row["state"] == "ARMED"
