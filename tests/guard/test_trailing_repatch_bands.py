"""A PATCHed trailing stop behind ingest's tick gate (the real control, ingest, the Polymarket simulator, guard's
published bands): after a PATCH raising ``activationPrice`` above the mark the old stop level lets nothing through
and fires nothing, the new activation price does; a PATCH of ``trailPct`` alone moves the stop level, and a book
already past the new level fires without moving again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from services.guard.app import Running
from services.ingest.__main__ import Ingest
from sim.polymarket import PolymarketSim
from tests.guard.conftest import GuardFactory, StartIngest
from tests.guard.standins import WALLET, WALLET_ID, StandIns, db, set_position, trigger_row
from tests.guard.test_bands_live import BANDS, best_bid, ready
from tests.guard.test_trailing_repatch_live import AUTH
from tests.helpers import eventually
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration
D = Decimal


@pytest.fixture
async def sim() -> AsyncIterator[PolymarketSim]:
    venue = await PolymarketSim(seed=11).start()
    yield venue
    await venue.stop()


async def armed(triggers: pb_grpc.TriggerServiceStub, db_url: str, running: Running, asset: str, *, trail: str,
                activation: str) -> str:
    """A trailing stop on the whole 40-share position in ``asset``, created through control and armed in guard."""
    conn = await db(db_url)
    await set_position(conn, "40", asset_id=asset)
    await conn.close()
    made = await triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=tpb.Trigger(
        wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=asset, kind=tpb.TRIGGER_KIND_TRAILING_STOP,
        trail_pct=trail, activation_price=activation, sell_fraction="1")), metadata=AUTH)
    await eventually(lambda: made.id in running.guard.engine)
    return made.id


async def marked(running: Running, tid: str, mark: str) -> None:
    await eventually(lambda: (s := running.guard.engine.get(tid)) is not None and s.high_water_mark == D(mark),
                     timeout_s=30)


async def stored(db_url: str, tid: str, mark: str) -> None:
    """Guard's flush has saved ``mark``."""
    conn = await db(db_url)
    try:
        await eventually(lambda: _mark_is(conn, tid, D(mark)), timeout_s=30)
    finally:
        await conn.close()


async def _mark_is(conn: Any, tid: str, mark: Decimal) -> bool:
    return bool((await trigger_row(conn, tid))["high_water_mark"] == mark)


async def at_bid(ingest: Ingest, sim: PolymarketSim, token: str, bid: str) -> None:
    """The book moves to ``bid`` and ingest has it (whether or not its tick went out)."""
    best_bid(sim, token, bid)
    await eventually(lambda: ingest.books.books[token].best_bid == D(bid), timeout_s=30)


async def gate_band(ingest: Ingest, token: str, band: tuple[Any, ...]) -> None:
    """Ingest filters with ``band`` ((lo, hi, hi_inclusive) of the best bid)."""
    def current() -> bool:
        got = ingest.gate.bands.get(token)
        return got is not None and (got.sources[0].lo, got.sources[0].hi, got.sources[0].hi_inclusive) == band

    await eventually(current, timeout_s=30)


async def test_a_raised_activation_lets_the_old_level_pass_and_fires_from_the_new_one(
        db_url: str, start_ingest: StartIngest, sim: PolymarketSim, standins: StandIns,
        triggers: pb_grpc.TriggerServiceStub, make_guard: GuardFactory) -> None:
    yes, _no = sim.add_market(mid="0.51", min_order_size=D("5")).tokens  # best bid 0.50
    ingest = await start_ingest()
    running = await make_guard(**BANDS)
    tid = await armed(triggers, db_url, running, yes, trail="10", activation="0.55")
    await ready(ingest, running, yes)
    await at_bid(ingest, sim, yes, "0.60")
    await marked(running, tid, "0.60")  # fires at 0.54 from here
    patched = await triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=tid, trigger=tpb.Trigger(
        activation_price="0.70")), metadata=AUTH)
    assert patched.high_water_mark == "0"
    await gate_band(ingest, yes, (None, D("0.70"), False))  # inactive: nothing below, the activation above
    await at_bid(ingest, sim, yes, "0.54")
    await at_bid(ingest, sim, yes, "0.53")
    await running.guard.drain()
    assert standins.executor.sells == []
    await at_bid(ingest, sim, yes, "0.70")
    await marked(running, tid, "0.70")
    await gate_band(ingest, yes, (D("0.63"), D("0.70"), True))
    await at_bid(ingest, sim, yes, "0.64")
    await running.guard.drain()
    assert standins.executor.sells == []
    best_bid(sim, yes, "0.63")
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    await running.guard.drain()
    assert [s.trigger_id for s in standins.executor.sells] == [tid]
    conn = await db(db_url)
    row = await trigger_row(conn, tid)
    await conn.close()
    assert (row["fire_count"], row["high_water_mark"], row["fire_price"]) == (1, D("0.70"), D("0.63"))


async def test_a_tighter_trail_fires_on_a_book_already_past_its_level(
        db_url: str, start_ingest: StartIngest, sim: PolymarketSim, standins: StandIns,
        triggers: pb_grpc.TriggerServiceStub, make_guard: GuardFactory) -> None:
    """Mark 0.60, trail 10% (level 0.54); the book sits at 0.56, inside the band (left out). A PATCH to 5% puts the
    level at 0.57: guard republishes the band, ingest checks its book against it, and the stop fires at 0.56."""
    yes, _no = sim.add_market(mid="0.51", min_order_size=D("5")).tokens
    ingest = await start_ingest()
    running = await make_guard(**BANDS)
    tid = await armed(triggers, db_url, running, yes, trail="10", activation="0")
    await ready(ingest, running, yes)
    await at_bid(ingest, sim, yes, "0.60")
    await marked(running, tid, "0.60")
    await stored(db_url, tid, "0.60")
    await gate_band(ingest, yes, (D("0.54"), D("0.60"), True))
    filtered = ingest.gate.stats.filtered
    await at_bid(ingest, sim, yes, "0.56")
    await eventually(lambda: ingest.gate.stats.filtered > filtered, timeout_s=30)
    await running.guard.drain()
    assert standins.executor.sells == []
    patched = await triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=tid, trigger=tpb.Trigger(trail_pct="5")),
                                           metadata=AUTH)
    assert (patched.trail_pct, patched.high_water_mark) == ("5", "0.6")
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    await running.guard.drain()
    assert [s.trigger_id for s in standins.executor.sells] == [tid]
    assert D(standins.executor.sells[0].reference_price) == D("0.56")
    assert ingest.gate.stats.rechecked >= 1
