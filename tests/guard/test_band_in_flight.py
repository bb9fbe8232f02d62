"""A trigger armed (or PATCHed) while its band is on its way to ingest: until the band message lands, ingest's gate
filters the asset's ticks with the band from before the change. After it lands the gate checks only the current top
(bandfeed: ``on_changed`` → ``TickGate.recheck``), so a price that crossed the new trigger in between and came back is
never read by guard."""

from __future__ import annotations

from decimal import Decimal

from common.bands import BandMessage, BandMeta, encode
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec
from services.ingest.tickgate import TickGate, Top
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-1"
D = Decimal
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


def _top(bid: str) -> Top:
    return (D(bid), D("0.60"), None, D("0.01"), False)


def test_a_crossing_while_the_new_band_is_in_flight_reaches_guard() -> None:
    """A stop-loss at 0.30 is armed; the user PATCHes it to 0.45 at t = 10 ms with the bid at 0.50. Guard's engine
    has the new stop at once; its band reaches ingest at t = 40 ms (publisher pacing, fires under way, Redis). The
    bid dips to 0.44 at t = 20 ms and is back at 0.47 at t = 30 ms: both inside the old band (above 0.30), left out.
    The new band lands: the current top (0.47) is inside it, but the 0.44 left out after the change goes out."""
    engine = Engine()
    engine.upsert(TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.30")))
    old = engine.published_band(A)
    assert old is not None
    gate = TickGate(heartbeat_s=60.0)
    gate.load(BandMeta("e", 1, 1, 5.0), {A: encode(old)}, 0)
    assert gate.admit(A, PRICE, _top("0.50"), 1 * MS)  # the asset's first tick
    engine.upsert(TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.45")), armed_ns=10 * MS)  # guard has it
    new = engine.published_band(A)
    assert new is not None
    sent = [gate.admit(A, PRICE, _top(bid), t * MS) for bid, t in (("0.44", 20), ("0.47", 30))]
    changed = gate.apply(BandMessage(BandMeta("e", 2, 1 * MS, 5.0), {A: encode(new)}), 40 * MS)
    assert changed == [A]
    assert not any(sent)  # both left out under the old band
    replayed = gate.replay(A, 40 * MS)
    assert [(t[0], observed) for _stamp, t, observed in replayed] == [(D("0.44"), 20 * MS)], "the dip goes out"
    assert gate.recheck(A, _top("0.47"), 40 * MS) == 0  # the current top is inside the new band
