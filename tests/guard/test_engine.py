"""The pure trigger engine: every kind, boundary prices, OCO, staleness, and its invariants."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.guard.domain.tick_view import inside_band
from services.guard.domain.trailing import TrailBook
from services.guard.domain.trigger_index import Engine, Prices, load
from services.guard.domain.trigger_model import Kind, Reason, Source, TriggerSpec

D = Decimal
A = "asset-1"


def tp(tid: str, price: str, **kw: object) -> TriggerSpec:
    return TriggerSpec(tid, kw.pop("asset", A), Kind.TAKE_PROFIT, trigger_price=D(price), **kw)  # type: ignore[arg-type]


def sl(tid: str, price: str, **kw: object) -> TriggerSpec:
    return TriggerSpec(tid, kw.pop("asset", A), Kind.STOP_LOSS, trigger_price=D(price), **kw)  # type: ignore[arg-type]


def ts(tid: str, trail: str, activation: str = "0", mark: str = "0", **kw: object) -> TriggerSpec:
    return TriggerSpec(tid, kw.pop("asset", A), Kind.TRAILING_STOP, trail_pct=D(trail),  # type: ignore[arg-type]
                       activation_price=D(activation), high_water_mark=D(mark), **kw)


def bid(p: str) -> Prices:
    return Prices(best_bid=D(p))


def run(engine: Engine, path: list[str], *, stale: bool = False) -> list[list[str]]:
    """Fired ids per tick."""
    return [[f.spec.id for f in engine.on_tick(A, bid(p), stale=stale).fired] for p in path]


@pytest.mark.parametrize(("spec", "path", "fires_at"), [
    # take-profit: price >= trigger
    (tp("t", "0.60"), ["0.50", "0.59", "0.60"], 2),
    (tp("t", "0.60"), ["0.50", "0.61"], 1),
    (tp("t", "0.60"), ["0.599999", "0.5"], None),
    (tp("t", "0.60"), ["0.60", "0.70"], 0),
    # stop-loss: price <= trigger
    (sl("s", "0.40"), ["0.50", "0.41", "0.40"], 2),
    (sl("s", "0.40"), ["0.50", "0.39"], 1),
    (sl("s", "0.40"), ["0.400001", "0.9"], None),
    # trailing stop, active at once: mark from the first price, fire at mark x (1 - 10%)
    (ts("r", "10"), ["0.50", "0.46", "0.45"], 2),  # 0.50 * 0.9 = 0.45 exactly
    (ts("r", "10"), ["0.50", "0.451"], None),
    (ts("r", "10"), ["0.50", "0.60", "0.55", "0.541", "0.54"], 4),  # mark 0.60 -> level 0.54
    (ts("r", "10"), ["0.50", "0.60", "0.50", "0.58", "0.54"], 2),  # mark never falls: 0.50 <= 0.54
    # trailing stop with an activation price: nothing before activation, mark starts there
    (ts("r", "10", activation="0.70"), ["0.50", "0.30", "0.10"], None),
    (ts("r", "10", activation="0.70"), ["0.50", "0.70", "0.64", "0.63"], 3),
    (ts("r", "10", activation="0.70"), ["0.69", "0.80", "0.72"], 2),
    # trailing stop already active (mark loaded from PostgreSQL)
    (ts("r", "20", mark="0.80"), ["0.65", "0.64"], 1),
    (ts("r", "20", mark="0.80"), ["0.90", "0.73", "0.72"], 2),
])
def test_each_kind_fires_exactly_at_its_boundary(spec: TriggerSpec, path: list[str],
                                                 fires_at: int | None) -> None:
    engine = load([spec])
    fired = run(engine, path)
    expected = [[spec.id] if i == fires_at else [] for i in range(len(path))]
    assert fired == expected
    assert (spec.id in engine) == (fires_at is None)


@pytest.mark.parametrize(("source", "prices", "fires"), [
    (Source.BEST_BID, Prices(best_bid=D("0.61"), mid=D("0.5"), last_trade=D("0.5")), True),
    (Source.BEST_BID, Prices(best_bid=D("0.59"), mid=D("0.7"), last_trade=D("0.7")), False),
    (Source.MID, Prices(best_bid=D("0.5"), mid=D("0.6"), last_trade=D("0.5")), True),
    (Source.MID, Prices(best_bid=D("0.7"), mid=None, last_trade=D("0.7")), False),
    (Source.LAST_TRADE, Prices(best_bid=D("0.5"), mid=D("0.5"), last_trade=D("0.65")), True),
    (Source.LAST_TRADE, Prices(best_bid=D("0.9"), mid=D("0.9"), last_trade=None), False),
])
def test_price_source_picks_the_watched_price(source: Source, prices: Prices, fires: bool) -> None:
    engine = load([tp("t", "0.60", source=source)])
    out = engine.on_tick(A, prices, stale=False)
    assert [f.spec.id for f in out.fired] == (["t"] if fires else [])
    if fires:
        assert out.fired[0].price == prices.get(source)


def test_stale_tick_fires_nothing_and_holds_once_then_fresh_tick_fires() -> None:
    engine = load([sl("s", "0.40"), tp("t", "0.60"), sl("far", "0.10")])
    out = engine.on_tick(A, bid("0.35"), stale=True)
    assert out.fired == [] and [h.spec.id for h in out.held] == ["s"]
    again = engine.on_tick(A, bid("0.30"), stale=True)
    assert not again  # already held: no repeat
    assert "s" in engine
    fresh = engine.on_tick(A, bid("0.39"), stale=False)
    assert [f.spec.id for f in fresh.fired] == ["s"] and fresh.released == []


def test_held_trigger_is_released_when_a_fresh_price_does_not_cross() -> None:
    engine = load([sl("s", "0.40")])
    assert [h.spec.id for h in engine.on_tick(A, bid("0.30"), stale=True).held] == ["s"]
    out = engine.on_tick(A, bid("0.45"), stale=False)
    assert out.fired == [] and [s.id for s in out.released] == ["s"]
    assert [h.spec.id for h in engine.on_tick(A, bid("0.30"), stale=True).held] == ["s"]


def test_untrusted_stale_ticks_do_not_move_a_trailing_mark() -> None:
    engine = load([ts("r", "10", mark="0.50")])
    engine.on_tick(A, bid("0.90"), stale=True, trusted=False)  # the book was stale: its price may be gone
    spec = engine.get("r")
    assert spec is not None and spec.high_water_mark == D("0.50")
    assert run(engine, ["0.46"]) == [[]]


def test_ladder_rungs_fire_one_by_one_and_a_gap_fires_several() -> None:
    rungs = [tp(f"l{i}", p, oco_group="g", closing=False) for i, p in enumerate(["0.6", "0.7", "0.8"])]
    engine = load([*rungs, tp("top", "0.9", oco_group="g"), sl("stop", "0.3", oco_group="g")])
    assert run(engine, ["0.61"]) == [["l0"]]
    out = engine.on_tick(A, bid("0.85"), stale=False)
    assert sorted(f.spec.id for f in out.fired) == ["l1", "l2"] and out.cancelled == []
    out = engine.on_tick(A, bid("0.95"), stale=False)
    assert [f.spec.id for f in out.fired] == ["top"]
    assert [(c.spec.id, c.reason, c.by) for c in out.cancelled] == [("stop", Reason.OCO_SIBLING_FIRED, "top")]
    assert len(engine) == 0


def test_oco_first_closing_fire_cancels_siblings_even_in_the_same_tick() -> None:
    engine = load([tp("a", "0.6", oco_group="g"), tp("b", "0.65", oco_group="g"),
                   tp("partial", "0.5", oco_group="g", closing=False), sl("c", "0.2", oco_group="g"),
                   tp("other", "0.6")])
    out = engine.on_tick(A, bid("0.7"), stale=False)
    assert sorted(f.spec.id for f in out.fired) == ["a", "other"]
    assert sorted(c.spec.id for c in out.cancelled) == ["b", "c", "partial"]
    assert all(c.by == "a" for c in out.cancelled)
    assert len(engine) == 0


def test_a_same_named_group_on_another_asset_is_another_group() -> None:
    engine = load([sl("here", "0.4", oco_group="g"), sl("there", "0.4", asset="asset-2", oco_group="g")])
    out = engine.on_tick(A, bid("0.3"), stale=False)
    assert [f.spec.id for f in out.fired] == ["here"] and out.cancelled == []
    assert engine.assets() == {"asset-2"}


def test_remove_upsert_and_resolve() -> None:
    engine = load([tp("t", "0.6"), sl("s", "0.4"), ts("r", "20", mark="0.5"), tp("x", "0.6", asset="b")])
    assert engine.assets() == {A, "b"}
    engine.upsert(tp("t", "0.8"))  # a PATCH moved the price
    assert run(engine, ["0.7"]) == [[]]
    assert run(engine, ["0.62"]) == [[]]
    engine.upsert(ts("r", "10"))  # trail changed; the mark 0.7 is kept
    spec = engine.get("r")
    assert spec is not None and spec.high_water_mark == D("0.7") and spec.trail_pct == D("10")
    removed = engine.remove("s")
    assert removed is not None and removed.id == "s" and engine.remove("s") is None
    cancelled = engine.resolve(A)
    assert sorted(c.spec.id for c in cancelled) == ["r", "t"]
    assert {c.reason for c in cancelled} == {Reason.MARKET_RESOLVED}
    assert engine.assets() == {"b"} and len(engine) == 1


def test_dirty_marks_report_rises_once() -> None:
    engine = load([ts("r1", "10"), ts("r2", "5"), ts("r3", "10", activation="0.9")])
    engine.on_tick(A, bid("0.5"), stale=False)
    assert [(m, sorted(ids)) for m, ids in engine.take_dirty_marks()] == [(D("0.5"), ["r1", "r2"])]
    assert engine.take_dirty_marks() == []
    engine.on_tick(A, bid("0.49"), stale=False)
    assert engine.take_dirty_marks() == []
    engine.on_tick(A, bid("0.55"), stale=False)
    assert [(m, sorted(ids)) for m, ids in engine.take_dirty_marks()] == [(D("0.55"), ["r1", "r2"])]


def test_dirty_marks_cover_every_asset_and_source_that_rose() -> None:
    engine = load([ts("a1", "10"), ts("b1", "10", asset="b"), ts("b2", "10", asset="b", source=Source.MID),
                   ts("c1", "10", asset="c", mark="0.6"), ts("d1", "10", asset="d")])
    engine.on_tick(A, bid("0.5"), stale=False)
    engine.on_tick("b", Prices(best_bid=D("0.4"), mid=D("0.45")), stale=False)
    engine.on_tick("c", bid("0.55"), stale=False)  # below its loaded mark: nothing rises
    engine.on_tick("d", bid("0.3"), stale=True, trusted=False)  # untrusted stale prices move no mark
    assert sorted((m, sorted(ids)) for m, ids in engine.take_dirty_marks()) == [
        (D("0.4"), ["b1"]), (D("0.45"), ["b2"]), (D("0.5"), ["a1"])]
    engine.on_tick(A, bid("0.52"), stale=False)
    engine.on_tick(A, bid("0.53"), stale=False)
    assert engine.take_dirty_marks() == [(D("0.53"), ["a1"])]
    engine.on_tick(A, bid("0.6"), stale=False)
    engine.remove("a1")  # risen, then gone before the flush: nothing to write
    assert engine.take_dirty_marks() == []


def test_trailing_groups_merge_and_fire_in_trail_order() -> None:
    book = TrailBook()
    book.add("wide", D("30"), D("0"))
    book.tick(D("0.5"))
    book.add("late", D("10"), D("0.4"))  # activates at 0.45 with its own mark
    assert book.tick(D("0.45")) == []
    assert book.mark_of("late") == D("0.45") and book.mark_of("wide") == D("0.5")
    assert book.tick(D("0.6")) == []  # both lifted to 0.6: one group
    assert book.mark_of("late") == book.mark_of("wide") == D("0.6")
    assert book.tick(D("0.54")) == [("late", D("0.6"))]
    assert book.tick(D("0.42")) == [("wide", D("0.6"))]
    assert len(book) == 0


@pytest.mark.parametrize("bad", ["0", "100", "-1", "150"])
def test_trailing_rejects_trail_out_of_range(bad: str) -> None:
    with pytest.raises(ValueError):
        TrailBook().add("r", D(bad), D("0"))


# --- properties -----------------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=999).map(lambda n: D(n) / 1000)
paths = st.lists(prices, min_size=1, max_size=60)


coarse = st.integers(min_value=1, max_value=20).map(lambda n: D(n) / 20)  # equal prices are frequent
coarse_paths = st.lists(coarse, min_size=1, max_size=60)


@st.composite
def specs(draw: st.DrawFn, prices: st.SearchStrategy[Decimal] = prices) -> list[TriggerSpec]:
    out = []
    for i in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(list(Kind)))
        group = draw(st.sampled_from(["", "", "g1", "g2"]))
        closing = draw(st.booleans())
        source = draw(st.sampled_from([Source.BEST_BID, Source.MID]))
        if kind is Kind.TRAILING_STOP:
            trail = D(draw(st.integers(1, 99)))
            activation = draw(st.one_of(st.just(D(0)), prices))
            mark = draw(st.one_of(st.just(D(0)), prices))
            out.append(TriggerSpec(f"t{i}", A, kind, source, trail_pct=trail, activation_price=activation,
                                   high_water_mark=mark, oco_group=group, closing=closing))
        else:
            out.append(TriggerSpec(f"t{i}", A, kind, source, trigger_price=draw(prices),
                                   oco_group=group, closing=closing))
    return out


def _naive_fires(spec: TriggerSpec, price: Decimal, mark: Decimal) -> bool:
    if spec.kind is Kind.TAKE_PROFIT:
        return price >= spec.trigger_price
    if spec.kind is Kind.STOP_LOSS:
        return price <= spec.trigger_price
    return mark > 0 and price <= mark * (1 - spec.trail_pct / 100)


def _naive_rise(spec: TriggerSpec, price: Decimal, mark: Decimal) -> Decimal:
    """A trailing stop's mark after ``price``: activated at it, or lifted to it."""
    if spec.kind is not Kind.TRAILING_STOP:
        return mark
    if mark == 0:
        return price if price >= spec.activation_price else mark
    return max(mark, price)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(specs(), paths, st.lists(st.sampled_from(["fresh", "fresh", "late", "untrusted"]), min_size=60, max_size=60))
def test_every_trigger_fires_at_most_once_and_matches_a_naive_model(
        all_specs: list[TriggerSpec], path: list[Decimal], kinds: list[str]) -> None:
    """Fresh ticks activate, lift, then fire; a late tick (trusted: the book's price, read too late to fire on)
    activates and lifts, then only holds; an untrusted stale tick only holds. Marks stay equal to the model's."""
    engine = load(all_specs)
    by_id = {s.id: s for s in all_specs}
    marks = {s.id: s.high_water_mark for s in all_specs}
    armed = set(by_id)
    fired_count: dict[str, int] = {}
    closed_groups: set[str] = set()
    for i, p in enumerate(path):
        mid = min(p + D("0.001"), D("0.999"))
        tick = Prices(best_bid=p, mid=mid)
        kind = kinds[i]
        if kind != "fresh":
            out = engine.on_tick(A, tick, stale=True, trusted=kind == "late")
            assert out.fired == [] and out.cancelled == []
            if kind == "late":
                for tid in armed:
                    marks[tid] = _naive_rise(by_id[tid], tick.get(by_id[tid].source) or D(0), marks[tid])
            expected_held = {tid for tid in armed
                             if _naive_fires(by_id[tid], tick.get(by_id[tid].source) or D(0), marks[tid])}
            assert {h.spec.id for h in out.held} <= expected_held
            assert _trailing_marks(engine) == {t: marks[t] for t in _trailing_marks(engine)}
            continue
        out = engine.on_tick(A, tick, stale=False)
        # the naive model: activate, lift, then fire
        crossing = set()
        for tid in armed:
            spec = by_id[tid]
            price = tick.get(spec.source)
            assert price is not None
            marks[tid] = _naive_rise(spec, price, marks[tid])
            if _naive_fires(spec, price, marks[tid]):
                crossing.add(tid)
        reported = {f.spec.id for f in out.fired} | {c.spec.id for c in out.cancelled}
        assert crossing <= reported
        for f in out.fired:
            fired_count[f.spec.id] = fired_count.get(f.spec.id, 0) + 1
            assert f.spec.oco_group not in closed_groups or not f.spec.oco_group
            if f.spec.kind is Kind.TRAILING_STOP:
                assert f.spec.high_water_mark == marks[f.spec.id]
        for f in out.fired:
            if f.spec.oco_group and f.spec.closing:
                closed_groups.add(f.spec.oco_group)
        armed -= reported
        assert armed == engine.ids()
    assert all(n == 1 for n in fired_count.values())
    assert _trailing_marks(engine) == {t: marks[t] for t in _trailing_marks(engine)}


def _trailing_marks(engine: Engine) -> dict[str, Decimal]:
    return {t: s.high_water_mark for t in engine.ids() if (s := engine.get(t)) is not None
            and s.kind is Kind.TRAILING_STOP}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["g1", "g2", "g3"]), prices, st.sampled_from(list(Kind))),
                min_size=1, max_size=20), paths)
def test_a_classic_oco_group_fires_at_most_one_member(members: list[tuple[str, Decimal, Kind]],
                                                    path: list[Decimal]) -> None:
    all_specs = [TriggerSpec(f"t{i}", A, kind, trigger_price=p, trail_pct=D(10), oco_group=g)
                 for i, (g, p, kind) in enumerate(members)]
    engine = load(all_specs)
    fired: dict[str, list[str]] = {}
    for p in path:
        for f in engine.on_tick(A, bid(str(p)), stale=False).fired:
            fired.setdefault(f.spec.oco_group, []).append(f.spec.id)
    assert all(len(ids) == 1 for ids in fired.values())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 99), st.one_of(st.just(D(0)), prices)), min_size=1, max_size=20),
       paths)
def test_a_trailing_high_water_mark_never_falls(stops: list[tuple[int, Decimal]], path: list[Decimal]) -> None:
    book = TrailBook()
    for i, (trail, activation) in enumerate(stops):
        book.add(f"r{i}", D(trail), activation)
    last: dict[str, Decimal] = {}
    for p in path:
        fired = dict(book.tick(p))
        for tid in [f"r{i}" for i in range(len(stops))]:
            mark = fired.get(tid, book.mark_of(tid) if tid in book else None)
            if mark is None:
                continue
            if mark > 0:
                assert mark >= last.get(tid, D(0))
                assert tid in fired or mark >= p
                last[tid] = mark


def _inside(band: tuple[tuple[Source, Decimal | None, Decimal | None, bool], ...], p: Prices) -> bool:
    """The core's quiet-tick check (ticks.inside_band) on this tick's prices."""
    return inside_band([p.get(Source.BEST_BID), p.get(Source.MID), p.get(Source.LAST_TRADE)], band)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.tuples(specs(), paths), st.tuples(specs(coarse), coarse_paths)),
       st.lists(st.booleans(), min_size=60, max_size=60))
def test_a_tick_inside_the_band_changes_nothing(case: tuple[list[TriggerSpec], list[Decimal]],
                                                 stale_flags: list[bool]) -> None:
    """The checks guard uses to skip ticks: whatever it calls quiet (a stale tick inside the band or inside
    the range of stale prices already evaluated, or a fresh one inside the band with nothing held), the
    engine agrees is a no-op."""
    all_specs, path = case
    engine = load(all_specs)
    for price, stale in zip(path, stale_flags, strict=False):
        p = Prices(best_bid=price, mid=price + D("0.0005"))
        band = engine.band(A)
        quiet = band is not None and _inside(band, p) and (stale or not engine.holds(A))
        if quiet or (stale and engine.stale_covered(A, p)):
            before = {tid: engine.get(tid) for tid in engine.ids()}
            out = engine.on_tick(A, p, stale=stale)
            assert not out
            assert {tid: engine.get(tid) for tid in engine.ids()} == before
        else:
            engine.on_tick(A, p, stale=stale)


@pytest.mark.parametrize(("price", "quiet"), [("0.60", True), ("0.601", False), ("0.55", True), ("0.54", False)])
def test_a_price_at_the_trailing_mark_is_quiet_but_one_above_it_or_at_the_stop_level_is_not(
        price: str, quiet: bool) -> None:
    engine = load([ts("r", "10", mark="0.60")])  # level 0.54
    band = engine.band(A)
    assert band is not None and _inside(band, bid(price)) is quiet


def test_a_price_at_an_activation_price_is_never_quiet() -> None:
    engine = load([ts("r", "10", activation="0.70"), ts("q", "10", mark="0.70", asset=A)])
    band = engine.band(A)
    assert band is not None and not _inside(band, bid("0.70"))
    assert engine.on_tick(A, bid("0.70"), stale=False) is not None and engine.get("r").high_water_mark == D("0.70")  # type: ignore[union-attr]
