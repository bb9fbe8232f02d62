"""A new guard process (a restart) reads the tick log from the cursor it takes at start, but publishes its first bands
only after that: meanwhile ingest's gate would filter with the old process's bands, narrowed by prices that process
logged and never read. The new process never reads those prices (they are before its cursor), so a tick after its
cursor that the narrowed band left out would be lost, though the new engine needed it: here the one price that
activates a trailing stop, which then never sells (gate fuzz h9). So the new process first invalidates the bands and
waits for ingest's acknowledgement, which comes after the gate stopped trusting them (``common.band_reset``), and
only then takes its cursor: the protocol's order, modelled here on the real gate and engine."""

from __future__ import annotations

from decimal import Decimal

from common.bands import BandMeta, encode
from services.guard.domain.trigger_index import Engine, Prices, load
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A = "asset-a"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


def _stop() -> TriggerSpec:
    """Trailing stop s: 10 %, activation 0.52, not active yet."""
    return TriggerSpec("s", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("10"), activation_price=D("0.52"),
                       high_water_mark=D(0))


def _band(engine: Engine) -> str:
    band = engine.published_band(A)
    assert band is not None
    return encode(band)


def _fires(engine: Engine, ticks: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """Guard reading ``ticks`` (stamp, bid) in order."""
    out = []
    for stamp, bid in ticks:
        engine.settle(stamp)
        out += [(f.spec.id, bid) for f in engine.on_tick(A, Prices(best_bid=D(bid)), stale=False,
                                                          received_ns=stamp).fired]
    return out


def test_a_tick_after_a_new_guards_cursor_is_not_left_out_by_the_old_processs_narrowed_band() -> None:
    """Guard 1's band for s: hi 0.52. The bid 0.53 at 4 ms is logged (it activates s) and narrows the gate's band to
    (0.477, 0.53]; guard 1 stops before reading it. Guard 2 loads s as stored (not active), invalidates the bands
    (the feed reads them again: none, at 5 ms), and once that is acknowledged takes its cursor at the log's end
    (4 ms): it never reads the 0.53. The bid 0.52 at 8 ms, after the cursor, would be inside the old narrowed band,
    but the gate trusts no band now: it goes out, and activates s (mark 0.52, level 0.468) for guard 2. Guard 2's
    first bands (through_ns 4 ms) land at 9 ms with the top at 0.50; the 0.46 at 12 ms crosses s's level."""
    gate = TickGate(heartbeat_s=3600)
    guard1 = load([_stop()])
    gate.load(BandMeta("g1", 1, 0, 60.0), {A: _band(guard1)}, 0)
    assert gate.admit(A, PRICE, top("0.50"), 1 * MS)  # the asset's first tick (guard 1 reads it)
    assert not _fires(guard1, [(1 * MS, "0.50")])
    assert gate.admit(A, PRICE, top("0.53"), 4 * MS)  # logged; guard 1 stops before reading it
    assert not gate.admit(A, PRICE, top("0.52"), 4 * MS + 1)  # the old narrowed band: before the invalidation

    guard2 = load([_stop()])  # the stored row: not active
    gate.load(None, {}, 5 * MS)  # guard 2's invalidation: the feed reads the deleted meta, then acknowledges
    end_stamp = 4 * MS  # guard 2's cursor, taken after the acknowledgement
    log2: list[tuple[int, str]] = []  # what guard 2 reads: the ticks logged after its cursor
    every: list[tuple[int, str]] = []  # every price after the cursor
    for at_ms, bid in ((8, "0.52"), (12, "0.46")):
        if at_ms == 12:  # guard 2's first bands, then its catch-up of the stored book
            assert gate.load(BandMeta("g2", 1, end_stamp, 60.0), {A: _band(guard2)}, 9 * MS) == [A]
            if stamp := gate.recheck(A, top("0.50"), 9 * MS):
                log2.append((stamp, "0.50"))
            every.append((9 * MS, "0.50"))
            assert not _fires(guard2, [(9 * MS + 1, "0.50")])  # the catch-up
        if stamp := gate.admit(A, PRICE, top(bid), at_ms * MS):
            log2.append((stamp, bid))
        every.append((at_ms * MS, bid))

    assert _fires(load([_stop()]), every) == [("s", "0.46")]  # a guard 2 that read every tick after its cursor
    assert _fires(guard2, log2) == [("s", "0.46")], "the 0.52 after guard 2's cursor was left out: s never sells"
