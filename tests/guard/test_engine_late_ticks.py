"""The pure trigger engine, continued: a price read too late to fire on (fresh at ingest) still activates trailing
stops and lifts their marks, as ingest's tick gate assumes when it narrows a band by that price, and only holds what
it crosses; the watched assets' version moves only with the set of assets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.guard.domain.trigger_index import Engine, load
from services.guard.domain.trigger_model import TriggerSpec
from tests.guard.test_engine import A, bid, sl, tp, ts

D = Decimal


@pytest.mark.parametrize(("specs_", "late", "mark", "held", "then", "fired"), [
    # read too late to fire on: the mark still rises to the price, the fall after it fires at the new level
    ([ts("r", "10", mark="0.50")], "0.90", "0.90", [], "0.80", ["r"]),
    # a pending stop activates at the late price
    ([ts("r", "10", activation="0.60")], "0.70", "0.70", [], "0.62", ["r"]),
    ([ts("r", "10", activation="0.60")], "0.55", "0", [], "0.50", []),
    # what the late price crosses is held, not fired: a take-profit, a stop the price fell through
    ([ts("r", "10", mark="0.50"), tp("t", "0.80")], "0.90", "0.90", ["t"], "0.85", ["t"]),
    ([ts("r", "10", mark="0.80")], "0.70", "0.80", ["r"], "0.75", []),
])
def test_a_fresh_price_read_late_lifts_marks_and_fires_nothing(specs_: list[TriggerSpec], late: str, mark: str,
                                                               held: list[str], then: str, fired: list[str]) -> None:
    engine = load(specs_)
    out = engine.on_tick(A, bid(late), stale=True)  # trusted: the book's price, guard read it too late
    assert out.fired == [] and sorted(h.spec.id for h in out.held) == held
    spec = engine.get("r")
    assert spec is not None and spec.high_water_mark == D(mark)
    lifted = mark == late
    assert engine.take_dirty_marks() == ([(D(mark), ["r"])] if lifted else [])  # saved like any rise
    assert sorted(f.spec.id for f in engine.on_tick(A, bid(then), stale=False).fired) == fired


def test_the_assets_version_moves_only_when_the_set_of_watched_assets_does() -> None:
    engine = Engine()
    v0 = engine.assets_version
    engine.upsert(tp("t1", "0.6"))
    v1 = engine.assets_version
    assert v1 != v0
    engine.upsert(sl("s1", "0.4"))  # same asset: the set is unchanged
    engine.on_tick(A, bid("0.5"), stale=False)
    assert engine.assets_version == v1
    engine.remove("t1")
    assert engine.assets_version == v1
    engine.remove("s1")  # the last trigger of the asset
    assert engine.assets_version not in (v0, v1)
    assert load([]).assets_version != Engine().assets_version  # unique per engine
