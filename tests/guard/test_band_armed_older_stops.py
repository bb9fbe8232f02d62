"""A trailing stop armed while guard lags the tick log: a price ingest logged before the arm that guard has not read
yet still lifts the marks of the stops armed before it (guard keeps stops in epochs by arm time), so ingest's gate
must keep narrowing the band's ``lo`` by it, or the fall below those stops' new levels stays out of the log and
guard never sells (real engine, real gate, band messages between, the top rechecked after each as bandfeed does)."""

from __future__ import annotations

from decimal import Decimal

from common.bands import BandMessage, BandMeta, encode
from services.guard.domain.trigger_index import Engine, Prices, load
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A = "asset-a"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


def _trailing(tid: str, trail: str, *, mark: str = "0", activation: str = "0") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D(trail),
                       activation_price=D(activation), high_water_mark=D(mark))


class Link:
    """Guard's engine publishing its band to the gate, and reading what the gate logged."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gate = TickGate(heartbeat_s=3600)
        self.seq, self.through = 1, 0
        self.log: list[tuple[int, str]] = []
        self.fired: list[tuple[str, str]] = []
        self.gate.load(BandMeta("e", 1, 0, 60.0), {A: self._band()}, 0)

    def _band(self) -> str:
        band = self.engine.published_band(A)
        assert band is not None
        return encode(band)

    def tick(self, bid: str, at_ms: int) -> bool:
        stamp = self.gate.admit(A, PRICE, top(bid), at_ms * MS)
        if stamp:
            self.log.append((stamp, bid))
        return bool(stamp)

    def publish(self, at_ms: int, bid: str) -> None:
        """Guard's band lands at ingest; the current top (``bid``) is checked against it."""
        self.seq += 1
        assert self.gate.apply(BandMessage(BandMeta("e", self.seq, self.through, 60.0), {A: self._band()}),
                               at_ms * MS) is not None
        if stamp := self.gate.recheck(A, top(bid), at_ms * MS):
            self.log.append((stamp, bid))

    def read(self) -> None:
        for stamp, bid in self.log:
            self.engine.settle(stamp)
            out = self.engine.on_tick(A, Prices(best_bid=D(bid)), stale=False, received_ns=stamp)
            self.fired += [(f.spec.id, bid) for f in out.fired]
            self.through = stamp
        self.log.clear()


def test_a_rise_logged_before_another_stop_was_armed_still_narrows_the_older_stops_level() -> None:
    """Trailing stop r: 5 %, mark 0.50 (stop level 0.475). The bid rises to 0.52 at 4 ms (logged; guard has not read
    it, and will lift r to 0.52: level 0.494) and is back at 0.50 at 6 ms (left out). At 8 ms a trailing stop n
    (5 %, activation 0.55) is armed: guard's band, still from before the 0.52 (lo 0.475, hi 0.50), lands with
    ``armed_ns`` 8 ms and the top (0.50) is inside it. The gate drops its narrowing by the 0.52, stamped before the
    arm, though guard lifts r by it (r was armed before it). The bid falls to 0.49 at 9 ms, at or below r's level
    0.494 after the 0.52: left out, guard never sells r (it recovers to 0.51 at 12 ms, inside again)."""
    link = Link(load([_trailing("r", "5", mark="0.50")]))
    assert link.tick("0.50", 1)  # the asset's first tick
    link.read()
    link.publish(2, "0.50")
    assert link.tick("0.52", 4)  # above r's mark: logged, not read yet
    assert not link.tick("0.50", 6)
    link.engine.upsert(_trailing("n", "5", activation="0.55"), armed_ns=8 * MS)
    link.publish(8, "0.50")
    link.tick("0.49", 9)
    link.tick("0.51", 12)
    link.read()
    spec = link.engine.get("r")
    assert spec is None or spec.high_water_mark == D("0.52")
    assert link.fired == [("r", "0.49")], "guard never read the 0.49 that crossed r's level 0.494"


def test_a_second_arm_keeps_the_narrowing_by_a_rise_after_the_first() -> None:
    """Trailing stop a (10 %, activation 0.50) armed at 5 ms with the bid at 0.50: the recheck logs the 0.50 (it
    activates a: mark 0.50, level 0.45); the 0.48 at 7 ms is left out. Guard has not read the 0.50 when stop b (5 %,
    activation 0.60) is armed at 10 ms: its band (lo 0.40, hi 0.50) holds the top, and the gate drops the 0.50's
    narrowing (stamped before b's arm), though guard lifts a by it (a was armed before it). The 0.45 at 12 ms is a's
    crossing; it is left out and a is never sold."""
    link = Link(load([_trailing("t", "20", mark="0.50")]))  # level 0.40: keeps the asset watched
    assert link.tick("0.50", 1)
    link.read()
    link.publish(2, "0.50")
    link.engine.upsert(_trailing("a", "10", activation="0.50"), armed_ns=5 * MS)
    link.publish(5, "0.50")  # the top (0.50) activates a: logged by the recheck
    assert not link.tick("0.48", 7)
    link.engine.upsert(_trailing("b", "5", activation="0.60"), armed_ns=10 * MS)
    link.publish(10, "0.48")
    link.tick("0.45", 12)
    link.read()
    assert link.fired == [("a", "0.45")], "guard never read the 0.45 that crossed a's level 0.45"
