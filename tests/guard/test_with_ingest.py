"""Guard with the real ingest and the Polymarket simulator: guard's watch set makes ingest follow the book,
the simulated market falls, ingest's PriceTick stream (gRPC) crosses the stop, one SELL goes out; a
``market_resolved`` frame cancels the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from services.ingest.__main__ import Ingest
from sim.polymarket import PolymarketSim
from tests.guard.conftest import GuardFactory, ingest_settings
from tests.guard.standins import StandIns, db, insert_trigger, set_position, trigger_row
from tests.helpers import eventually, retuned

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[PolymarketSim]:
    venue = await PolymarketSim(seed=5).start()
    yield venue
    await venue.stop()


async def test_simulated_market_through_ingest_fires_one_sell(
        db_url: str, redis_url: str, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    market = sim.add_market(mid="0.5", min_order_size=Decimal("5"))
    yes, no = market.tokens
    conn = await db(db_url)
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.9", fraction="1", asset_id=no)
    ingest = Ingest(ingest_settings(sim), redis_url, db_url)
    port = await ingest.start()
    try:
        running = await make_guard(ingest_target=f"127.0.0.1:{port}", tick_source="grpc")
        # guard's watch set makes ingest subscribe to both books; ingest stores market info (minimum size)
        await eventually(lambda: {yes, no} <= ingest.clob.subscribed, timeout_s=30)
        assert running.guard.firer.stats.decided == 0
        # sellers take the bids down to 0.44 (a bid stays there: with no bid at all a stop on the best bid has
        # no price, and ingest may coalesce the book's intermediate states into that last one)
        sim.books.set_level(yes, "BUY", "0.44", "100")
        while True:
            bids, _asks = sim.books.levels(yes)
            if not bids or bids[0][0] <= Decimal("0.44"):
                break
            sim.books.consume(yes, "SELL", bids[0][1])
        toggle = iter(range(1_000_000))

        def sold() -> bool:
            if standins.executor.sells:
                return True
            # keep ticks coming (the best ask moves; ingest ticks on top-of-book changes) in case guard's
            # stream opened after the drop
            sim.books.set_level(yes, "SELL", "0.46", "10" if next(toggle) % 2 == 0 else "0")
            return False

        await eventually(sold, timeout_s=30, interval_s=0.2)
        sell = standins.executor.sells[0]
        assert (sell.trigger_id, sell.size, sell.min_order_size) == ("trg_sl", "40", "5")
        assert Decimal(sell.reference_price) <= Decimal("0.45")
        sim.books.resolve(market.condition_id, [yes, no], yes)

        async def resolved() -> bool:
            row = await trigger_row(conn, "trg_tp")
            return row["state"] == "CANCELLED" and row["state_reason"] == "MARKET_RESOLVED"

        await eventually(resolved, timeout_s=30)
        await running.guard.drain()
        assert len(standins.executor.calls) == 1
    finally:
        await ingest.stop()
        await conn.close()


async def test_a_resolution_only_rest_saw_cancels_the_armed_triggers(
        db_url: str, redis_url: str, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    """No socket ``market_resolved`` at all: ingest's REST safety net finds the resolution of the held market and
    its MARKET_RESOLVED ticks cancel every armed trigger of the market."""
    market = sim.add_market(mid="0.5", min_order_size=Decimal("5"))
    yes, no = market.tokens
    conn = await db(db_url)
    await set_position(conn, "40", asset_id=yes)
    await conn.execute("UPDATE positions SET condition_id = %s", (market.condition_id,))
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.1", fraction="1", asset_id=yes)
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.9", fraction="1", asset_id=no)
    ingest = Ingest(retuned(ingest_settings(sim), market_check_interval_s=1.0), redis_url, db_url)
    port = await ingest.start()
    try:
        await make_guard(ingest_target=f"127.0.0.1:{port}", tick_source="grpc")
        await eventually(lambda: {yes, no} <= ingest.clob.subscribed, timeout_s=30)
        sim.resolve(market, no, socket=False)

        async def cancelled() -> bool:
            rows = [await trigger_row(conn, t) for t in ("trg_sl", "trg_tp")]
            return all(r["state"] == "CANCELLED" and r["state_reason"] == "MARKET_RESOLVED" for r in rows)

        await eventually(cancelled, timeout_s=30)
        assert ingest.metrics.count("resolutions", "CLOB_REST", "EMITTED") == 1
        assert standins.executor.calls == []
    finally:
        await ingest.stop()
        await conn.close()
