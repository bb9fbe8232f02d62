"""Guard's price bands with ingest's tick gate, end to end in memory: whatever the gate leaves out, guard fires the
same triggers at the same ticks, cancels the same OCO siblings, holds and releases the same triggers on stale
prices and ends with the same trailing high-water marks as a guard that saw every tick, however late guard reads
the log and however late the band messages arrive."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from common.bands import BandMessage, BandMeta
from services.guard.domain.price_bands import band_changes
from services.guard.domain.trigger_index import Engine, Outcome, Prices, load
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate, Top
from tests.guard.test_engine import A, coarse, prices, specs
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
MS = 1_000_000
TICK = D("0.01")


def _prices(top: Top) -> Prices:
    bid, ask = top[0], top[1]
    return Prices(best_bid=bid, mid=(bid + ask) / 2 if bid is not None and ask is not None else None,
                  last_trade=top[2])


@dataclass
class Pair:
    """A guard that sees every tick (``ref``) and one behind ingest's gate (``eng``), with the log and the band
    messages between them."""

    ref: Engine
    eng: Engine
    gate: TickGate
    lease_s: float
    log: deque[tuple[int, float, Top]] = field(default_factory=deque)  # (stamp, tick index, top)
    messages: deque[BandMessage] = field(default_factory=deque)
    published: dict[str, str] = field(default_factory=dict)
    seq: int = 0
    through: int = 0
    now: int = 0
    top: Top | None = None
    index: float = 0
    ref_events: list[tuple[str, str, float]] = field(default_factory=list)
    eng_events: list[tuple[str, str, float]] = field(default_factory=list)

    def start(self) -> None:
        self.eng.take_band_changes()
        self.published = band_changes(self.eng.assets(), self.eng.published_band, {})
        self.seq = 1
        self.gate.load(BandMeta("e", 1, 0, self.lease_s), dict(self.published), self.now)

    def tick(self, i: int, top: Top) -> None:
        self.now, self.top, self.index = (i + 1) * MS, top, i
        _record(self.ref_events, self.ref.on_tick(A, _prices(top), stale=top[4]), i)
        stamp = self.gate.admit(A, mpb.TICK_KIND_PRICE_CHANGE, top, self.now)
        if stamp:
            self.log.append((stamp, i, top))

    def consume(self, n: int) -> None:
        for _ in range(min(n, len(self.log))):
            stamp, i, top = self.log.popleft()
            _record(self.eng_events, self.eng.on_tick(A, _prices(top), stale=top[4]), i)
            self.through = stamp
        self.publish(beat=False)

    def publish(self, *, beat: bool) -> None:
        changed = band_changes(self.eng.take_band_changes(), self.eng.published_band, self.published)
        if not changed and not beat:
            return
        self.seq += 1
        self.messages.append(BandMessage(BandMeta("e", self.seq, self.through, self.lease_s), changed))
        for asset_id, text in changed.items():
            if text:
                self.published[asset_id] = text
            else:
                self.published.pop(asset_id, None)

    def deliver(self, n: int) -> None:
        for _ in range(min(n, len(self.messages))):
            changed = self.gate.apply(self.messages.popleft(), self.now)
            assert changed is not None
            if changed and self.top is not None:
                stamp = self.gate.recheck(A, self.top, self.now)
                if stamp:
                    self.log.append((stamp, self.index + 0.5, self.top))

    def drain(self) -> None:
        while self.log or self.messages:
            self.consume(len(self.log))
            self.deliver(len(self.messages))

    def arm(self, spec: TriggerSpec) -> None:
        """A trigger armed once guard has read every tick and ingest has every band (the window of an arm's
        propagation is empty here; the gate's check of the current top stands in for the next tick)."""
        self.drain()
        self.ref.upsert(spec)
        self.eng.upsert(spec)
        if self.top is not None:  # what ingest's check on the new band does: the current top, at once
            _record(self.ref_events, self.ref.on_tick(A, _prices(self.top), stale=self.top[4]), self.index + 0.5)
        self.publish(beat=False)
        self.deliver(len(self.messages))
        self.consume(len(self.log))


def _record(events: list[tuple[str, str, float]], out: Outcome, i: float) -> None:
    events.extend(("fired", f.spec.id, i) for f in out.fired)
    events.extend(("cancelled", c.spec.id, i) for c in out.cancelled)
    events.extend(("held", h.spec.id, i) for h in out.held)
    events.extend(("released", r.id, i) for r in sorted(out.released))


def _marks(engine: Engine) -> dict[str, Decimal]:
    return {tid: spec.high_water_mark for tid in engine.ids() if (spec := engine.get(tid)) is not None
            and spec.kind is Kind.TRAILING_STOP}


@st.composite
def steps(draw: st.DrawFn, price: st.SearchStrategy[Decimal]) -> list[tuple[Top, int, int, bool]]:
    """Per tick: its top of book, how many log entries guard reads and band messages ingest applies after it,
    and whether guard sends a beat."""
    out = []
    for _ in range(draw(st.integers(1, 60))):
        bid = draw(price)
        spread = draw(st.sampled_from([TICK, TICK, D("0.002"), D("0.05")]))
        last = draw(st.one_of(st.none(), price))
        stale = draw(st.sampled_from([False, False, False, False, True]))
        out.append(((bid, bid + spread, last, TICK, stale), draw(st.integers(0, 3)), draw(st.integers(0, 3)),
                    draw(st.booleans())))
    return out


def _check(all_specs: list[TriggerSpec], plan: list[tuple[Top, int, int, bool]], heartbeat_ms: float,
           lease_ms: float, arms: dict[int, TriggerSpec], *, holds: bool = True) -> Pair:
    pair = Pair(load(all_specs), load(all_specs), TickGate(heartbeat_s=heartbeat_ms / 1000), lease_ms / 1000)
    pair.start()
    for i, (top, reads, applies, beat) in enumerate(plan):
        if i in arms:
            pair.arm(arms[i])
        pair.tick(i, top)
        pair.consume(reads)
        if beat:
            pair.publish(beat=True)
        pair.deliver(applies)
    pair.drain()
    kept = {"fired", "cancelled", "held", "released"} if holds else {"fired", "cancelled"}
    assert [e for e in pair.eng_events if e[0] in kept] == [e for e in pair.ref_events if e[0] in kept]
    assert pair.eng.ids() == pair.ref.ids()
    assert _marks(pair.eng) == _marks(pair.ref)
    return pair


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.tuples(specs(), steps(prices)), st.tuples(specs(coarse), steps(coarse))),
       st.sampled_from([0.5, 5.0, 1e9]), st.sampled_from([3.0, 1e9]))
def test_the_gate_hides_no_fire_cancel_or_mark_rise(case: tuple[list[TriggerSpec], list[tuple[Top, int, int, bool]]],
                                                    heartbeat_ms: float, lease_ms: float) -> None:
    all_specs, plan = case
    _check(all_specs, plan, heartbeat_ms, lease_ms, {})


@settings(max_examples=300, deadline=None)
@given(st.tuples(specs(coarse), steps(coarse)), st.lists(st.tuples(st.integers(0, 59), specs(coarse)), max_size=4))
def test_triggers_armed_mid_path_fire_as_if_every_tick_was_seen(
        case: tuple[list[TriggerSpec], list[tuple[Top, int, int, bool]]],
        later: list[tuple[int, list[TriggerSpec]]]) -> None:
    """Arms, re-arms and price changes between ticks: the gate's check of the current top on the new band fires
    a trigger armed beyond the price at once (the reference evaluates that top once more too). Holds are left
    out of the comparison: that extra evaluation of a stale top may hold a trigger the gate has no reason to
    send the top for (its band did not change), and the next fresh tick releases it anyway."""
    all_specs, plan = case
    arms = {}
    for n, (at, extra) in enumerate(later):
        arms[at] = extra[0]._replace(id=f"armed{n}", oco_group="")
    _check(all_specs, plan, 1e9, 1e9, arms, holds=False)


def test_most_ticks_inside_the_bands_are_left_out() -> None:
    """The point of it all: a walk inside the band sends its first tick and the heartbeats only."""
    specs_ = [TriggerSpec("s", A, Kind.STOP_LOSS, Source.BEST_BID, trigger_price=D("0.40")),
              TriggerSpec("t", A, Kind.TAKE_PROFIT, Source.BEST_BID, trigger_price=D("0.60")),
              TriggerSpec("r", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("20"),
                          high_water_mark=D("0.55"))]
    plan = [((D("0.50") + D(i % 5) / 100, D("0.56") + D(i % 5) / 100, None, TICK, False), 1, 1, False)
            for i in range(200)]
    pair = _check(specs_, plan, 50.0, 1e9, {})
    assert pair.gate.stats.filtered >= 190
