"""A trailing stop armed while guard lags the tick log: ingest's gate must not narrow its band by a price guard will
not lift that stop's book by (received before the arm), or the new highs after the arm stay out of the log and the
marks end lower than those of the same guard reading every tick (real engine, real gate, band messages between)."""

from __future__ import annotations

from decimal import Decimal

from common.bands import BandMessage, BandMeta
from services.guard.domain.price_bands import band_changes
from services.guard.domain.trigger_index import Engine, Prices, load
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate, Top
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
A = "asset-a"
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


def prices(t: Top) -> Prices:
    return Prices(best_bid=t[0], mid=None, last_trade=None)


def marks(engine: Engine) -> dict[str, Decimal]:
    return {tid: spec.high_water_mark for tid in sorted(engine.ids()) if (spec := engine.get(tid)) is not None}


class Link:
    """Guard's band messages to the gate (one epoch), guard reading what the gate logged."""

    def __init__(self, engine: Engine, gate: TickGate) -> None:
        self.engine, self.gate = engine, gate
        self.published: dict[str, str] = {}
        self.seq, self.through = 0, 0
        self.log: list[tuple[int, Top]] = []

    def publish(self, now: int) -> list[str]:
        changed = band_changes(self.engine.take_band_changes() | self.engine.assets() | set(self.published),
                               self.engine.published_band, self.published)
        self.seq += 1
        meta = BandMeta("e", self.seq, self.through, 60.0)
        for asset_id, text in changed.items():
            self.published[asset_id] = text
        if self.seq == 1:
            self.gate.load(meta, dict(self.published), now)
            return list(self.published)
        out = self.gate.apply(BandMessage(meta, changed), now)
        assert out is not None
        return out

    def tick(self, t: Top, now: int) -> None:
        stamp = self.gate.admit(A, PRICE, t, now)
        if stamp:
            self.log.append((stamp, t))

    def read(self) -> None:
        for stamp, t in self.log:
            self.engine.on_tick(A, prices(t), stale=False, received_ns=stamp)
            self.through = stamp
        self.log.clear()


def test_prices_logged_before_a_trailing_stop_was_armed_do_not_hide_the_highs_after_it() -> None:
    old = TriggerSpec("r", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("20"), high_water_mark=D("0.55"))
    new = TriggerSpec("n", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("5"), activation_price=D("0.52"))
    ticks = [(1, "0.50"), (2, "0.60"), (4, "0.58"), (5, "0.56")]
    armed_at = 3 * MS

    # the same guard reading every tick, as late: it reads them all after the arm
    ref = load([old])
    ref.on_tick(A, prices(top("0.50")), stale=False, received_ns=1 * MS)
    ref.upsert(new, armed_ns=armed_at)
    for at, bid in ticks[1:]:
        ref.on_tick(A, prices(top(bid)), stale=False, received_ns=at * MS)

    link = Link(load([old]), TickGate(heartbeat_s=3600))
    link.publish(0)
    link.tick(top("0.50"), 1 * MS)
    link.read()
    link.tick(top("0.60"), 2 * MS)  # above the mark: logged, guard has not read it yet
    link.engine.upsert(new, armed_ns=armed_at)
    link.publish(armed_at)  # the arm's band reaches ingest (guard still behind the 0.60)
    for at, bid in ticks[2:]:
        link.tick(top(bid), at * MS)
    link.read()
    changed = link.publish(6 * MS)  # guard read past the 0.60: ingest's own narrowing ends, the top is checked
    if A in changed and (stamp := link.gate.recheck(A, top("0.56"), 6 * MS)):
        link.log.append((stamp, top("0.56")))
    link.read()
    assert marks(link.engine) == marks(ref) == {"n": D("0.58"), "r": D("0.60")}
