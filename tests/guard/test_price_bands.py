"""The bands guard publishes for ingest (pure): per kind of trigger, as triggers come and go, fire and hold."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.bands import AssetBand, SourceBand, after_rise, outside
from services.guard.domain.price_bands import band_changes
from services.guard.domain.trigger_index import Prices, load
from services.guard.domain.trigger_model import Source, TriggerSpec
from tests.guard.test_engine import A, bid, coarse, prices, sl, specs, tp, ts

D = Decimal


@pytest.mark.parametrize(("specs", "band"), [
    ([tp("t", "0.60"), sl("s", "0.40")], (SourceBand(0, D("0.40"), D("0.60"), False),)),
    ([tp("t", "0.60"), tp("t2", "0.70"), sl("s", "0.40"), sl("s2", "0.30")],
     (SourceBand(0, D("0.40"), D("0.60"), False),)),
    # an active trailing stop: its level below, its mark above (a price at the mark lifts nothing); the lowest
    # take-profit rides along (a rise past it fires it, or holds it when read late: common.bands.after_rise)
    ([ts("r", "10", mark="0.50"), tp("t", "0.60")],
     (SourceBand(0, D("0.450"), D("0.50"), True, D("0.1"), D("0.60")),)),
    ([ts("r", "10", mark="0.50"), sl("s", "0.46")], (SourceBand(0, D("0.46"), D("0.50"), True, D("0.1")),)),
    # not yet activated: nothing below, its activation price above (reached: it activates)
    ([ts("r", "20", activation="0.70")], (SourceBand(0, None, D("0.70"), False, D("0.2")),)),
    ([ts("r", "20", activation="0.70"), ts("q", "5", mark="0.80")],
     (SourceBand(0, D("0.760"), D("0.70"), False, D("0.05")),)),
    # OCO pairs and ladder rungs are plain thresholds
    ([tp("a", "0.6", oco_group="g"), sl("b", "0.3", oco_group="g"), tp("l1", "0.55", oco_group="g", closing=False)],
     (SourceBand(0, D("0.3"), D("0.55"), False),)),
    # one band per watched price source, in the tick's order
    ([tp("t", "0.60", source=Source.MID), sl("s", "0.40", source=Source.LAST_TRADE), sl("b", "0.2")],
     (SourceBand(0, D("0.2"), None, False), SourceBand(1, None, D("0.60"), False),
      SourceBand(2, D("0.40"), None, False))),
])
def test_published_band_per_kind(specs: list[TriggerSpec], band: tuple[SourceBand, ...]) -> None:
    assert load(specs).published_band(A) == AssetBand(band)


def test_the_band_follows_fires_lifts_holds_and_changes() -> None:
    engine = load([ts("r", "10", mark="0.50"), ts("q", "20", mark="0.50"), sl("s", "0.30"), tp("t", "0.90")])
    assert engine.published_band(A) == AssetBand((SourceBand(0, D("0.450"), D("0.50"), True, D("0.1"), D("0.90")),))
    engine.take_band_changes()
    engine.on_tick(A, bid("0.50"), stale=False)  # at the mark: evaluated (marked dirty), band unchanged
    assert engine.take_band_changes() == {A}
    engine.on_tick(A, bid("0.60"), stale=False)  # lifts both marks
    assert engine.published_band(A) == AssetBand((SourceBand(0, D("0.540"), D("0.60"), True, D("0.1"), D("0.90")),))
    engine.on_tick(A, bid("0.54"), stale=False)  # r fires: q's trail is the smallest left
    assert engine.published_band(A) == AssetBand((SourceBand(0, D("0.480"), D("0.60"), True, D("0.2"), D("0.90")),))
    engine.take_band_changes()
    engine.on_tick(A, bid("0.20"), stale=True)  # held
    assert engine.take_band_changes() == {A} and engine.published_band(A).holds  # type: ignore[union-attr]
    engine.on_tick(A, bid("0.55"), stale=False)  # released
    assert not engine.published_band(A).holds  # type: ignore[union-attr]
    engine.take_band_changes()
    engine.upsert(sl("s2", "0.52"))
    assert engine.take_band_changes() == {A}
    assert engine.published_band(A) == AssetBand((SourceBand(0, D("0.52"), D("0.60"), True, D("0.2"), D("0.90")),))
    for tid in ("q", "s", "t", "s2"):
        engine.remove(tid)
    assert engine.published_band(A) is None and engine.take_band_changes() == {A}


def test_band_changes_lists_what_differs_from_what_was_published() -> None:
    engine = load([tp("t", "0.60"), tp("u", "0.60", asset="b")])
    published = band_changes(engine.assets(), engine.published_band, {})
    assert published == {A: "-;0,,0.6,0,,", "b": "-;0,,0.6,0,,"}
    engine.upsert(sl("s", "0.4"))
    engine.remove("u")
    assert band_changes({A, "b", "c"}, engine.published_band, published) == {A: "-;0,0.4,0.6,0,,", "b": ""}


GRID = [D(n) / 200 for n in range(1, 201)]


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(st.one_of(specs(), specs(coarse)), st.one_of(prices, coarse), st.booleans())
def test_the_band_narrowed_by_a_rise_is_inside_guards_whether_it_read_the_price_fresh_or_late(
        all_specs: list[TriggerSpec], price: Decimal, late: bool) -> None:
    """What ingest does with a price it forwarded above a band (common.bands.after_rise) leaves a band inside the one
    guard has once it read that price: fresh (marks lifted, stops activated, take-profits fired) or late (stale to
    guard: nothing lifted). Every price of the grid inside the narrowed band is inside guard's."""
    engine = load(all_specs)
    before = engine.published_band(A)
    assert before is not None
    engine.on_tick(A, Prices(best_bid=price, mid=price), stale=late)
    after = engine.published_band(A)
    narrowed = {sb.source: after_rise(sb, price) for sb in before.sources}
    guards = {sb.source: sb for sb in after.sources} if after is not None else {}
    for source, band in narrowed.items():
        if source not in guards:
            continue  # every trigger of that source fired: nothing left to hide
        for q in GRID:
            if not outside(band, q):
                assert not outside(guards[source], q), (band, guards[source], q)
