"""Left-out prices sent again when a band lands (``TickGate.replay``) never make guard fire what a guard that read
every tick in time would not: guard's engine reads what the gate sends, in the order it sends it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from common.bands import BandMessage, BandMeta, encode
from services.guard.domain.outcomes import Prices
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate, Top
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-1"
D = Decimal
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE


class Loop:
    """Guard's engine reading every tick the gate sends (the first, 0.50 / 0.51, at 1 ms)."""

    def __init__(self, *specs: TriggerSpec, first: Top | None = None) -> None:
        self.engine = Engine()
        for spec in specs:
            self.engine.upsert(spec, armed_ns=1)
        self.gate = TickGate(heartbeat_s=60.0)
        self.gate.load(BandMeta("e", 1, 1, 5.0), self.bands(), 0)
        self.fired: list[str] = []
        self.seq = 1
        assert self.tick(first or top("0.50"), 1)

    def bands(self) -> dict[str, str]:
        band = self.engine.published_band(A)
        return {A: encode(band)} if band is not None else {}

    def read(self, t: Top, stamp: int) -> None:
        bid, ask = t[0], t[1]
        mid = (bid + ask) / 2 if bid is not None and ask is not None else None
        out = self.engine.on_tick(A, Prices(best_bid=bid, mid=mid), stale=t[4], received_ns=stamp)
        self.fired += [f.spec.id for f in out.fired]

    def tick(self, t: Top, at_ms: int) -> int:
        stamp = self.gate.admit(A, PRICE, t, at_ms * MS)
        if stamp:
            self.read(t, stamp)
        return stamp

    def lands(self, at_ms: int) -> list[Decimal | None]:
        self.seq += 1
        self.gate.apply(BandMessage(BandMeta("e", self.seq, 1, 5.0), self.bands()), at_ms * MS)
        sent = self.gate.replay(A, at_ms * MS)
        for stamp, t in sent:
            self.read(t, stamp)
        return [t[0] for _stamp, t in sent]


def sl(tid: str, price: str, source: Source = Source.BEST_BID) -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.STOP_LOSS, source=source, trigger_price=D(price))


def trailing(tid: str, mark: str) -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, trail_pct=D("10"), activation_price=D("0"),
                       high_water_mark=D(mark))


def test_a_band_bringing_two_changes_looks_only_after_the_latest() -> None:
    """x PATCHed at 10 ms, 0.44 left out at 20 ms (above x), y armed at 0.45 at 30 ms with the bid at 0.47: the 0.44
    came before y existed, and is not sent again (the prices between two changes of one band are not looked at)."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.40"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    g.engine.upsert(sl("y", "0.45"), armed_ns=30 * MS)
    assert not g.tick(top("0.47"), 35)
    assert g.lands(40) == []
    assert g.fired == [] and g.gate.left.partial == 1


def test_a_high_from_before_a_trailing_stop_was_armed_lifts_no_mark_of_it() -> None:
    """A PATCH at 10 ms, 0.60 left out at 20 ms, a trailing stop (mark 0.50) armed at 30 ms, 0.50 at 35 ms: sent
    again at 40 ms, the 0.60 would lift the new stop's mark (a later 0.52 would then sell)."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.35"), armed_ns=10 * MS)
    assert not g.tick(top("0.60"), 20)
    g.engine.upsert(trailing("r", "0.50"), armed_ns=30 * MS)
    assert not g.tick(top("0.50"), 35)
    assert g.lands(40) == []
    g.tick(top("0.52"), 50)
    spec = g.engine.get("r")
    assert spec is not None and spec.high_water_mark == D("0.52") and g.fired == []


def test_an_older_price_is_not_sent_after_a_newer_one_while_the_band_has_a_trailing_stop() -> None:
    """A trailing stop on the bid (mark 0.50, level 0.45) and a stop on the mid PATCHed to 0.46 at 10 ms. At 20 ms
    bid 0.455 / ask 0.465 is left out (its mid crosses the new stop); at 30 ms bid 0.60 goes out and lifts the mark
    (level 0.54). Sent again after it, the 0.455 would sell the trailing stop's position too: it is not sent."""
    g = Loop(trailing("u1", "0.50"), sl("u2", "0.30", Source.MID), first=(D("0.48"), D("0.49"), None, D("0.005"),
                                                                         False))
    g.engine.upsert(sl("u2", "0.46", Source.MID), armed_ns=10 * MS)
    assert not g.tick((D("0.455"), D("0.465"), None, D("0.005"), False), 20)
    assert g.tick((D("0.60"), D("0.61"), None, D("0.005"), False), 30)
    assert g.lands(40) == []
    assert "u1" not in g.fired


def test_nothing_is_sent_again_after_a_stale_tick() -> None:
    """A fresh 0.44 left out at 20 ms, then the book goes stale (the STALE tick goes out): guard knows the book is
    stale, and an older fresh price sent now would read as the current one."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert g.tick((D("0.10"), D("0.50"), None, D("0.01"), True), 25)
    assert g.lands(40) == []


def test_a_price_left_out_longer_ago_than_guard_would_fire_on_is_not_sent() -> None:
    """The band lands 2 s after the dip: guard does not fire on a price it reads that late (tick_max_age_s)."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert g.lands(2020) == []
    assert g.gate.left.late == 1


def test_the_dip_after_a_patch_fires_the_patched_stop() -> None:
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert not g.tick(top("0.47"), 30)
    assert g.lands(40) == [D("0.44")]
    assert g.fired == ["x"]


KINDS = ("SL", "SL_MID", "TP", "TRAIL")
events = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.tuples(st.integers(30, 70), st.integers(1, 4))),
    st.tuples(st.just("arm"), st.tuples(st.sampled_from(KINDS), st.integers(30, 70))),
    st.tuples(st.just("patch"), st.tuples(st.integers(0, 5), st.integers(30, 70))),
    st.tuples(st.just("land"), st.just(0)),
), max_size=60)


def _spec(tid: str, kind: str, cents: int) -> TriggerSpec:
    price = D(cents) / 100
    if kind in ("SL", "SL_MID"):
        return sl(tid, str(price), Source.MID if kind == "SL_MID" else Source.BEST_BID)
    if kind == "TP":
        return TriggerSpec(tid, A, Kind.TAKE_PROFIT, trigger_price=price)
    return trailing(tid, str(price))


@settings(max_examples=500, deadline=None)
@given(events)
def test_guard_behind_the_gate_fires_only_what_a_guard_reading_every_tick_fired_by_then(steps: list[Any]) -> None:
    """Against a guard that reads every tick when it comes (``reference``), arms and PATCHes reaching it then: guard
    behind the gate (arms and PATCHes at once; ticks as the gate sends them; bands landing at ``land``, then the
    prices sent again) fires a trigger on a price received at t only when the reference had fired it by t. (It may
    miss some: the documented limits.)"""
    reference = Engine()
    g = Loop()  # (its first tick, 0.50 at 1 ms, before any trigger)
    kinds: dict[str, str] = {}
    fired_at: dict[str, int] = {}  # the reference's fires
    received: dict[int, int] = {}  # id of a top given to the gate -> when it was received (ms)
    tops: list[Top] = []
    t = 1
    for op, arg in steps:
        t += 5
        if op == "tick":
            bid, ask = D(arg[0]) / 100, D(arg[0] + arg[1]) / 100
            out = reference.on_tick(A, Prices(best_bid=bid, mid=(bid + ask) / 2), stale=False, received_ns=t * MS)
            fired_at.update((f.spec.id, t) for f in out.fired)
            tops.append((bid, ask, None, D("0.01"), False))
            received[id(tops[-1])] = t
            before = len(g.fired)
            if g.tick(tops[-1], t):
                assert all(fired_at.get(tid, t + 1) <= t for tid in g.fired[before:])
        elif op == "land":
            g.seq += 1
            g.gate.apply(BandMessage(BandMeta("e", g.seq, g.gate.floor_ns, 5.0), g.bands()), t * MS)
            for stamp, sent in g.gate.replay(A, t * MS):
                before = len(g.fired)
                g.read(sent, stamp)
                at = received[id(sent)]
                assert all(fired_at.get(tid, at + 1) <= at for tid in g.fired[before:]), (g.fired[before:], at)
        else:
            if op == "arm":
                kind, cents = arg
                tid = f"k{len(kinds)}"
                kinds[tid] = kind
            else:
                index, cents = arg
                tid = f"k{index}"
                if tid not in kinds or tid not in reference or tid not in g.engine:
                    continue
                kind = kinds[tid]
            reference.upsert(_spec(tid, kind, cents), armed_ns=t * MS)
            g.engine.upsert(_spec(tid, kind, cents), armed_ns=t * MS)
