"""Left-out prices sent again when a band lands (``TickGate.replay``) never make guard fire what a guard that read
every tick in time would not: guard's engine reads what the gate sends, in the order it sends it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.bands import BandMessage, BandMeta, encode
from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import replay_refused
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec
from services.ingest.tickgate import TickGate, Top
from tests.gate_tops import top
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-1"
D = Decimal
MS = 1_000_000
PRICE = mpb.TICK_KIND_PRICE_CHANGE
MAX_AGE_NS = 2_000 * MS  # guard's tick_max_age_s


class Loop:
    """Guard's engine reading every tick the gate sends (the first, 0.50 / 0.51, at 1 ms), a price sent again only
    when ``tick_view.replay_refused`` lets it (as guard's coordinator does)."""

    def __init__(self, *specs: TriggerSpec, first: Top | None = None) -> None:
        self.engine = Engine()
        for spec in specs:
            self.engine.upsert(spec, armed_ns=1)
        self.gate = TickGate(heartbeat_s=60.0)
        self.gate.load(BandMeta("e", 1, 1, 5.0), self.bands(), 0)
        self.fired: list[str] = []
        self.came: list[int] = []  # when the price each of them fired on came (ns)
        self.refused = 0
        self.seq = 1
        assert self.tick(first or top("0.50"), 1)

    def bands(self) -> dict[str, str]:
        """The bands guard writes now."""
        band = self.engine.published_band(A)
        return {A: encode(band)} if band is not None else {}

    def read(self, t: Top, stamp: int, observed: int = 0) -> None:
        if observed and replay_refused(observed, stamp, MAX_AGE_NS, self.engine.published_band(A)):
            self.refused += 1
            return
        bid, ask = t[0], t[1]
        mid = (bid + ask) / 2 if bid is not None and ask is not None else None
        out = self.engine.on_tick(A, Prices(best_bid=bid, mid=mid), stale=t[4], received_ns=stamp)
        self.fired += [f.spec.id for f in out.fired]
        self.came += [observed or stamp for _f in out.fired]

    def tick(self, t: Top, at_ms: int) -> int:
        stamp = self.gate.admit(A, PRICE, t, at_ms * MS)
        if stamp:
            self.read(t, stamp)
        return stamp

    def lands(self, at_ms: int, written: dict[str, str] | None = None) -> list[tuple[Top, int]]:
        """Bands guard wrote (``written``, else now) land at ``at_ms``; returns what went out again (top, when it
        came), read by guard as it goes out."""
        self.seq += 1
        meta = BandMeta("e", self.seq, self.gate.floor_ns, 5.0)
        self.gate.apply(BandMessage(meta, self.bands() if written is None else written), at_ms * MS)
        sent = self.gate.replay(A, at_ms * MS)
        for stamp, t, observed in sent:
            self.read(t, stamp, observed)
        return [(t, observed) for _stamp, t, observed in sent]


def bids(sent: list[tuple[Top, int]]) -> list[Decimal | None]:
    return [t[0] for t, _observed in sent]


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
    assert bids(g.lands(40)) == []
    assert g.fired == [] and g.gate.left.partial == 1


def test_a_high_from_before_a_trailing_stop_was_armed_lifts_no_mark_of_it() -> None:
    """A PATCH at 10 ms, 0.60 left out at 20 ms, a trailing stop (mark 0.50) armed at 30 ms, 0.50 at 35 ms: sent
    again at 40 ms, the 0.60 would lift the new stop's mark (a later 0.52 would then sell)."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.35"), armed_ns=10 * MS)
    assert not g.tick(top("0.60"), 20)
    g.engine.upsert(trailing("r", "0.50"), armed_ns=30 * MS)
    assert not g.tick(top("0.50"), 35)
    assert bids(g.lands(40)) == []
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
    assert bids(g.lands(40)) == []
    assert "u1" not in g.fired


def test_nothing_is_sent_again_after_a_stale_tick() -> None:
    """A fresh 0.44 left out at 20 ms, then the book goes stale (the STALE tick goes out): guard knows the book is
    stale, and an older fresh price sent now would read as the current one."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert g.tick((D("0.10"), D("0.50"), None, D("0.01"), True), 25)
    assert bids(g.lands(40)) == []


def test_a_price_left_out_longer_ago_than_guard_would_fire_on_is_not_sent() -> None:
    """The band lands 2 s after the dip: guard does not fire on a price it reads that late (tick_max_age_s)."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert bids(g.lands(2020)) == []
    assert g.gate.left.late == 1


def test_the_dip_after_a_patch_fires_the_patched_stop() -> None:
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert not g.tick(top("0.47"), 30)
    assert bids(g.lands(40)) == [D("0.44")]
    assert g.fired == ["x"]


def tp(tid: str, price: str) -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TAKE_PROFIT, trigger_price=D(price))


def test_a_dip_from_before_a_newer_tick_sent_is_not_sent_again_whatever_the_band_holds() -> None:
    """x PATCHed at 10 ms; the band written at 12 ms (no trailing stop in it); trailing r armed at 14 ms (mark 0.40);
    0.44 left out at 20 ms; 0.60 sent at 25 ms (above the take-profit) lifts r's mark. Sent again after the 0.60,
    the 0.44 would sell r (a guard reading it in time saw r's level at 0.396)."""
    g = Loop(sl("x", "0.30"), tp("t", "0.58"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    written = g.bands()
    g.engine.upsert(trailing("r", "0.40"), armed_ns=14 * MS)
    assert not g.tick(top("0.44"), 20)
    assert g.tick(top("0.60"), 25)
    assert bids(g.lands(30, written)) == []
    assert "r" not in g.fired


@pytest.mark.parametrize("later", [trailing("r", "0.50"), sl("y", "0.46")])
def test_a_price_sent_again_is_not_read_once_a_trigger_was_armed_after_it(later: TriggerSpec) -> None:
    """x PATCHed at 10 ms, 0.44 left out at 20 ms, the band written at 28 ms, then another trigger armed at 32 ms
    (the book at 0.47): the 0.44 goes out at 35 ms, and guard leaves it alone: read now, it would fire the later
    trigger (or lift its mark) on a price from before it existed. x's crossing is missed (as before the replay)."""
    g = Loop(sl("x", "0.30"))
    g.engine.upsert(sl("x", "0.45"), armed_ns=10 * MS)
    assert not g.tick(top("0.44"), 20)
    assert not g.tick(top("0.47"), 25)
    written = g.bands()
    g.engine.upsert(later, armed_ns=32 * MS)
    assert [(t[0], observed) for t, observed in g.lands(35, written)] == [(D("0.44"), 20 * MS)]
    assert g.fired == [] and g.refused == 1
    spec = g.engine.get(later.id)
    assert spec is not None and spec == later


KINDS = ("SL", "SL_MID", "TP", "TRAIL")
events = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.tuples(st.integers(30, 70), st.integers(1, 4), st.integers(0, 9))),
    st.tuples(st.just("arm"), st.tuples(st.sampled_from(KINDS), st.integers(30, 70))),
    st.tuples(st.just("patch"), st.tuples(st.integers(0, 5), st.integers(30, 70))),
    st.tuples(st.just("write"), st.just(0)),
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
    """Against a guard that reads every tick when it comes (``reference``): guard behind the gate has arms and
    PATCHes at once, reads the ticks the gate sends, writes its bands (``write``) that land at ingest later
    (``land``; without a write before, they are written then), then reads the prices sent again. It fires a trigger
    on a price that came at t only when the reference had fired it by t (it may miss some: the documented limits).
    One tick in ten is STALE."""
    reference = Engine()
    g = Loop()  # (its first tick, 0.50 at 1 ms, before any trigger)
    kinds: dict[str, str] = {}
    fired_at: dict[str, int] = {}  # the reference's fires
    written: dict[str, str] | None = None
    t = 1
    for op, arg in steps:
        t += 5
        if op == "tick":
            bid, ask, stale = D(arg[0]) / 100, D(arg[0] + arg[1]) / 100, arg[2] == 0
            out = reference.on_tick(A, Prices(best_bid=bid, mid=(bid + ask) / 2), stale=stale, received_ns=t * MS)
            fired_at.update((f.spec.id, t) for f in out.fired)
            g.tick((bid, ask, None, D("0.01"), stale), t)
        elif op == "write":
            written = g.bands()
        elif op == "land":
            g.lands(t, written)
            written = None
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
        for tid, came in zip(g.fired, g.came, strict=True):
            assert fired_at.get(tid, came // MS + 1) <= came // MS, (tid, came)
