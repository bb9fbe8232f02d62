"""Guard's price bands with the real ingest, the Polymarket simulator, PostgreSQL and Redis: ingest leaves out the
ticks inside the bands, crossings still fire once, a trigger armed past the price fires without another tick,
trailing marks stay exact, and restarts of guard or ingest hide no crossing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from common.bands import BANDS_META_KEY, parse_meta
from common.streams import PRICE_TICKS
from services.guard.app import Running
from services.ingest.__main__ import Ingest
from services.ingest.bandfeed import last_tick_stamp
from sim.polymarket import PolymarketSim
from tests.guard.conftest import GuardFactory, StartIngest
from tests.guard.standins import StandIns, db, insert_trigger, publish_change, set_position, trigger_row
from tests.helpers import eventually

pytestmark = pytest.mark.integration

D = Decimal
TICK = D("0.01")
BANDS = {"tick_source": "log", "band_beat_s": 0.2, "band_lease_s": 1.0}


@pytest.fixture
async def sim() -> AsyncIterator[PolymarketSim]:
    venue = await PolymarketSim(seed=7).start()
    yield venue
    await venue.stop()


def best_bid(sim: PolymarketSim, token: str, bid: str) -> None:
    """Replace the token's book around a best bid (one ``book`` frame)."""
    b = D(bid)
    sim.books.set_book(token, bids=[(b - TICK * i, "100") for i in range(5) if b - TICK * i > 0],
                       asks=[(b + TICK * (i + 1), "100") for i in range(5) if b + TICK * (i + 1) < 1])


def wiggle_ask(sim: PolymarketSim, token: str, times: int, price: str = "0.505") -> None:
    """Top-of-book changes that leave the best bid alone: an ask level inside the spread comes and goes."""
    for i in range(times):
        sim.books.set_level(token, "SELL", price, "10" if i % 2 == 0 else "0")


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[Any]:
    c = await db(db_url)
    yield c
    await c.close()




async def logged(redis: Any) -> int:
    return int(await redis.xlen(PRICE_TICKS))


async def ready(ingest: Ingest, running: Running, *tokens: str) -> None:
    """Ingest follows the tokens' books under this guard's bands, and guard has read a tick of each."""
    await eventually(lambda: set(tokens) <= ingest.clob.subscribed, timeout_s=30)
    assert running.guard.engine is not None
    epoch = running.guard.bands.epoch  # type: ignore[union-attr]
    await eventually(lambda: ingest.gate.meta is not None and ingest.gate.meta.epoch == epoch
                     and set(tokens) <= set(ingest.gate.bands), timeout_s=30)
    await eventually(lambda: all(t in ingest.gate._last for t in tokens), timeout_s=30)
    await eventually(lambda: ingest.gate.valid_until_ns > 0, timeout_s=30)


async def test_ticks_inside_the_bands_stay_out_of_the_log_and_a_crossing_fires_once(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    market = sim.add_market(mid="0.5", min_order_size=D("5"))
    yes, no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.9", fraction="1", asset_id=no)
    ingest = await start_ingest()
    running = await make_guard(**BANDS)
    await ready(ingest, running, yes, no)
    before, filtered = await logged(redis), ingest.gate.stats.filtered
    wiggle_ask(sim, yes, 40)
    await eventually(lambda: ingest.gate.stats.filtered >= filtered + 40, timeout_s=30)
    assert await logged(redis) - before <= 2  # a recheck at most
    meta = parse_meta(await redis.get(BANDS_META_KEY))
    assert meta is not None and meta.epoch == running.guard.bands.epoch  # type: ignore[union-attr]
    best_bid(sim, yes, "0.44")
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    await running.guard.drain()
    assert [s.trigger_id for s in standins.executor.sells] == ["trg_sl"]
    assert (await trigger_row(conn, "trg_tp"))["state"] == "ARMED"


async def test_a_trigger_armed_past_the_price_fires_without_another_tick(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    """The book already sits below the new stop: ingest checks the current top against the band the arm
    published, and that tick fires it (the book does not move again)."""
    market = sim.add_market(mid="0.5", min_order_size=D("5"))
    yes, _no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_far", "STOP_LOSS", price="0.10", fraction="1", asset_id=yes)
    ingest = await start_ingest()
    running = await make_guard(**BANDS)
    await ready(ingest, running, yes)
    best_bid(sim, yes, "0.44")
    await eventually(lambda: ingest.books.books[yes].best_bid == D("0.44"), timeout_s=30)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
    await publish_change(redis, "trg_sl")
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    assert [s.trigger_id for s in standins.executor.sells] == ["trg_sl"]
    assert ingest.gate.stats.rechecked >= 1


async def test_trailing_marks_stay_exact_behind_the_gate(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    """A rise, ticks inside the risen band (left out), then a fall: the stop fires at the risen mark's level. The
    rise and the fall come back to back, before guard's new band can reach ingest: ingest narrows the band itself
    on the rise, so the fall (inside the band guard published before the rise) goes out."""
    market = sim.add_market(mid="0.51", min_order_size=D("5"))  # best bid 0.50
    yes, _no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="1", fraction="1", asset_id=yes, mark="0.50")
    ingest = await start_ingest()
    running = await make_guard(**BANDS)
    await ready(ingest, running, yes)  # band (0.495, 0.50]: the stop level, the mark
    best_bid(sim, yes, "0.62")
    await eventually(lambda: (s := running.guard.engine.get("trg_tr")) is not None
                     and s.high_water_mark == D("0.62"), timeout_s=30)
    filtered = ingest.gate.stats.filtered
    wiggle_ask(sim, yes, 4, "0.625")  # the best bid stays inside (0.6138, 0.62]
    await eventually(lambda: ingest.gate.stats.filtered >= filtered + 4, timeout_s=30)
    best_bid(sim, yes, "0.64")
    best_bid(sim, yes, "0.50")  # at once: the old band says inside, the stop level is now 0.6336
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    await running.guard.drain()
    assert [s.trigger_id for s in standins.executor.sells] == ["trg_tr"]
    row = await trigger_row(conn, "trg_tr")
    assert row["high_water_mark"] == D("0.64") and row["state"] != "ARMED"
    assert D(standins.executor.sells[0].reference_price) == D("0.50")


async def test_a_guard_restart_publishes_a_new_epoch_and_a_trigger_armed_meanwhile_fires(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    market = sim.add_market(mid="0.5", min_order_size=D("5"))
    yes, _no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_tp", "TAKE_PROFIT", price="0.9", fraction="1", asset_id=yes)
    ingest = await start_ingest()
    first = await make_guard(**BANDS)
    await ready(ingest, first, yes)
    await first.stop()
    # armed while no guard runs: the old bands (nothing below the price) would hide the fall
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
    second = await make_guard(**BANDS)
    assert second.guard.bands.epoch != first.guard.bands.epoch  # type: ignore[union-attr]
    await ready(ingest, second, yes)
    best_bid(sim, yes, "0.44")
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    assert [s.trigger_id for s in standins.executor.sells] == ["trg_sl"]


async def test_without_a_guard_every_tick_goes_out_once_the_lease_ran_out(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    market = sim.add_market(mid="0.5", min_order_size=D("5"))
    yes, _no = market.tokens
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
    ingest = await start_ingest()
    running = await make_guard(**BANDS)
    await ready(ingest, running, yes)
    await running.stop()  # no beat any more: the lease (1 s) runs out
    before = await logged(redis)

    async def all_out() -> bool:
        wiggle_ask(sim, yes, 2)
        return ingest.gate.stats.unguarded > 0 and await logged(redis) >= before + 4

    await eventually(all_out, timeout_s=30, interval_s=0.2)


async def test_an_ingest_restart_trusts_bands_once_guard_read_its_ticks_and_crossings_fire(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    market = sim.add_market(mid="0.5", min_order_size=D("5"))
    yes, _no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
    first = await start_ingest()
    running = await make_guard(**BANDS)
    await ready(first, running, yes)
    await first.stop()
    second = await start_ingest()
    assert second.gate.trust_after_ns > 0  # the last tick the first process logged
    await ready(second, running, yes)
    filtered = second.gate.stats.filtered
    wiggle_ask(sim, yes, 10)
    await eventually(lambda: second.gate.stats.filtered >= filtered + 10, timeout_s=30)
    best_bid(sim, yes, "0.44")
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    assert [s.trigger_id for s in standins.executor.sells] == ["trg_sl"]



async def test_a_new_guard_says_how_far_the_log_went_and_ingest_forgets_what_it_never_reads(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    """A rise goes out while no guard runs: ingest narrows the band by it until a guard has read it. The next guard
    reads the log from its end and never will: its first bands carry the stamp of the newest tick then, ingest drops
    that rise at once (and trusts the new bands: guard never reads a tick a previous ingest process sent before)."""
    market = sim.add_market(mid="0.51", min_order_size=D("5"))  # best bid 0.50
    yes, _no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_tr", "TRAILING_STOP", trail="10", fraction="1", asset_id=yes, mark="0.50")
    ingest = await start_ingest()
    first = await make_guard(**BANDS)
    await ready(ingest, first, yes)
    await first.stop()
    best_bid(sim, yes, "0.62")
    await eventually(lambda: yes in ingest.gate._rises and ingest.gate._rises[yes][-1][1][0] == D("0.62"),
                     timeout_s=30)
    newest = await last_tick_stamp(ingest.redis)
    second = await make_guard(**BANDS)
    await ready(ingest, second, yes)
    assert ingest.gate.meta is not None and ingest.gate.meta.through_ns >= newest
    assert all(stamp > newest for stamp, _prices in ingest.gate._rises.get(yes, []))


class HeldPipelines:
    """Wraps guard's band publisher's Redis client: its transactions wait for ``released`` before they run."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.released = asyncio.Event()

    async def transaction(self, commands: Any) -> Any:
        await self.released.wait()
        return await self._client.transaction(commands)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_a_dip_while_a_new_stops_band_is_on_its_way_reaches_guard(
        conn: Any, start_ingest: StartIngest, redis: Any, sim: PolymarketSim, standins: StandIns,
        make_guard: GuardFactory) -> None:
    """A stop at 0.45 is armed while guard's band writes are held: ingest still filters with the band from before
    (a stop at 0.10), and the bid's dip to 0.44 and return to 0.47 are left out. When the band lands, the dip, left
    out after the arm, goes out and fires the stop (before, only the current top was checked: no sale)."""
    market = sim.add_market(mid="0.5", min_order_size=D("5"))
    yes, _no = market.tokens
    await set_position(conn, "40", asset_id=yes)
    await insert_trigger(conn, "trg_far", "STOP_LOSS", price="0.10", fraction="1", asset_id=yes)
    ingest = await start_ingest()
    # one machine, one clock: no margin between the arm and the prices read after it
    running = await make_guard(**{**BANDS, "band_lease_s": 30.0, "replay_margin_s": 0.0})
    await ready(ingest, running, yes)
    publisher = running.guard.bands
    assert publisher is not None
    held = HeldPipelines(publisher.redis)
    publisher.redis = held
    try:
        await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.45", fraction="1", asset_id=yes)
        await publish_change(redis, "trg_sl")
        await eventually(lambda: "trg_sl" in running.guard.engine, timeout_s=30)  # type: ignore[operator]
        filtered = ingest.gate.stats.filtered
        for bid in ("0.44", "0.47"):
            best_bid(sim, yes, bid)
            await eventually(lambda bid=bid: ingest.books.books[yes].best_bid == D(bid), timeout_s=30)
        assert ingest.gate.stats.filtered >= filtered + 2  # both left out
        await running.guard.drain()
        assert not standins.executor.sells
    finally:
        held.released.set()
    await eventually(lambda: bool(standins.executor.sells), timeout_s=30)
    assert [s.trigger_id for s in standins.executor.sells] == ["trg_sl"]
    assert ingest.gate.stats.replayed == 1
