"""A PATCH of an active trailing stop (pure, table-driven): raising ``activationPrice`` above the high-water mark
resets the mark (inactive until the new activation price, then it trails from there); any other change keeps it.
The same rule holds in the engine (a reload), in a re-arm that carries a mark, in the rows loaded at a restart,
and in the band published to ingest."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from common.bands import BEST_BID, SourceBand
from services.guard.domain.trigger_index import Engine, Prices, load
from services.guard.domain.trigger_model import Kind, Origin, Source, State, TriggerSpec, live_mark
from services.guard.domain.trigger_rows import TriggerRow, spec_from_tuple
from tests.guard.inprocess import in_process_guard

D = Decimal
A = "asset-1"


def ts(activation: str = "0.70", trail: str = "10", mark: str = "0") -> TriggerSpec:
    """The trailing stop ``r`` as a row of PostgreSQL gives it to the engine."""
    return TriggerSpec("r", A, Kind.TRAILING_STOP, trail_pct=D(trail), activation_price=D(activation),
                       high_water_mark=D(mark))


def ticks(engine: Engine, path: list[str]) -> list[list[str]]:
    """Fired ids per fresh tick of ``path``."""
    return [[f.spec.id for f in engine.on_tick(A, Prices(best_bid=D(p)), stale=False).fired] for p in path]


def risen(rise: list[str]) -> Engine:
    """An engine with ``r`` (activation 0.70, trail 10%) after the prices ``rise``."""
    engine = load([ts()])
    assert ticks(engine, rise) == [[] for _ in rise]
    return engine


@pytest.mark.parametrize(("mark", "activation", "live"), [
    ("0.80", "0.90", "0"),  # activation raised above the mark: no mark
    ("0.80", "0.80", "0.80"),  # reached exactly
    ("0.80", "0.75", "0.80"),
    ("0.80", "0", "0.80"),
    ("0", "0.90", "0"),
    ("0", "0", "0"),
])
def test_live_mark(mark: str, activation: str, live: str) -> None:
    assert live_mark(D(mark), D(activation)) == D(live)


# Activation 0.70, trail 10%: the price rose to ``rise`` (the engine's mark); PostgreSQL has ``stored`` (control's
# row after the PATCH: reset to 0, or the mark a flush wrote and control kept). After the PATCH the engine tracks
# ``mark``, then ``path`` fires the stop at index ``fires`` (None: never).
PATCHES = [
    # activation raised above the mark: 0.72 (the old level) must not fire; 0.90 activates, 0.81 = 0.90 x 0.9 fires
    pytest.param(["0.80"], {"activation": "0.90"}, "0", "0", ["0.72", "0.60", "0.89", "0.90", "0.82", "0.81"], 5,
                 id="activation-above-mark-resets"),
    pytest.param(["0.80"], {"activation": "0.90"}, "0", "0", ["0.72", "0.95", "0.86", "0.855"], 3,
                 id="reset-then-trails-from-a-higher-mark"),
    pytest.param(["0.75", "0.80"], {"activation": "0.90", "trail": "5"}, "0", "0",
                 ["0.76", "0.72", "0.90", "0.86", "0.855"], 4, id="activation-and-trail-reset"),
    # kept: activation raised to at most the mark, lowered, cleared; the trail alone
    pytest.param(["0.80"], {"activation": "0.80"}, "0.80", "0.80", ["0.73", "0.72"], 1, id="activation-at-mark"),
    pytest.param(["0.80"], {"activation": "0.75"}, "0", "0.80", ["0.72"], 0, id="raised-below-mark-unsaved"),
    pytest.param(["0.80"], {"activation": "0.75"}, "0.80", "0.80", ["0.72"], 0, id="raised-below-mark-saved"),
    pytest.param(["0.80"], {"activation": "0.60"}, "0.80", "0.80", ["0.72"], 0, id="activation-lowered"),
    pytest.param(["0.80"], {"activation": "0"}, "0", "0.80", ["0.72"], 0, id="activation-cleared"),
    pytest.param(["0.80"], {"trail": "20"}, "0", "0.80", ["0.70", "0.65", "0.64"], 2, id="trail-wider"),
    pytest.param(["0.80"], {"trail": "5"}, "0.80", "0.80", ["0.76"], 0, id="trail-tighter"),
    # control reset its stored 0.80, but the engine saw 0.88 >= the new activation 0.85: the stop stays active
    pytest.param(["0.80", "0.88"], {"activation": "0.85"}, "0", "0.88", ["0.80", "0.792"], 1,
                 id="engine-mark-reached-new-activation"),
]


@pytest.mark.parametrize(("rise", "patch", "stored", "mark", "path", "fires"), PATCHES)
def test_a_patched_trailing_stop_keeps_or_resets_its_mark(rise: list[str], patch: dict[str, str], stored: str,
                                                         mark: str, path: list[str], fires: int | None) -> None:
    engine = risen(rise)
    engine.take_dirty_marks()  # flushed
    engine.upsert(ts(patch.get("activation", "0.70"), patch.get("trail", "10"), stored))
    spec = engine.get("r")
    assert spec is not None and spec.high_water_mark == D(mark)
    # a mark kept above the stored one is saved again; a reset one is not
    assert engine.take_dirty_marks() == ([(D(mark), ["r"])] if D(mark) > D(stored) else [])
    assert ticks(engine, path) == [["r"] if i == fires else [] for i in range(len(path))]
    assert "r" not in engine


def row(activation: str, mark: str) -> TriggerRow:
    """A stored ARMED trailing stop (trail 10%)."""
    now = datetime.now(UTC)
    return TriggerRow(id="r", wallet="0x" + "1" * 40, follower_wallet_id="w", subscription_id="", asset_id=A,
                      kind=Kind.TRAILING_STOP, trigger_price=D(0), trail_pct=D(10), activation_price=D(activation),
                      size=D(0), sell_fraction=D(1), oco_group="", price_source=Source.BEST_BID, state=State.ARMED,
                      state_reason="", high_water_mark=D(mark), source=Origin.MANUAL, order_id="", fire_count=0,
                      version=2, create_time=now, update_time=now, fired_time=None)


# A row whose mark is below its activation price (written before resets existed, or by a mark write that lost
# the race with the PATCH): the engine loads it inactive, at a restart as at a reload.
ROWS = [("0.90", "0.80", "0"), ("0.70", "0.80", "0.80"), ("0.80", "0.80", "0.80"), ("0", "0.80", "0.80"),
        ("0.90", "0", "0")]


@pytest.mark.parametrize(("activation", "mark", "loaded"), ROWS)
def test_a_stored_mark_below_the_activation_price_is_no_mark(activation: str, mark: str, loaded: str) -> None:
    bulk = spec_from_tuple(("r", A, "TRAILING_STOP", "BEST_BID", D(0), D(10), D(activation), D(mark), "", D(0),
                            D(1)))
    assert bulk.high_water_mark == row(activation, mark).spec().high_water_mark == D(loaded)
    engine = load([bulk])
    assert ticks(engine, ["0.72"]) == [["r"] if D(loaded) * D("0.9") >= D("0.72") else []]


@pytest.mark.parametrize(("activation", "carried", "stored", "mark", "saved"), [
    ("0.90", "0.80", "0", "0", []),  # the fire saw the old level; the PATCH raised the activation above its mark
    ("0.90", "0.92", "0", "0.92", [(D("0.92"), ["r"])]),  # the engine's mark had reached the new activation
    ("0.75", "0.80", "0", "0.80", [(D("0.80"), ["r"])]),
    ("0.70", "0.80", "0.85", "0.85", []),  # the stored mark is higher
])
async def test_a_rearm_carries_a_mark_only_up_to_the_activation_price(
        activation: str, carried: str, stored: str, mark: str, saved: list[Any]) -> None:
    """A fire found the row changed (TRIGGER_CHANGED) and re-arms it with the mark the engine fired it at."""
    guard, store = in_process_guard([])
    writes: list[Any] = []

    async def get(_tid: str) -> TriggerRow:
        return row(activation, stored)

    async def save_marks(marks: Any) -> None:
        writes.extend(marks)

    store.get = get  # type: ignore[attr-defined]
    store.save_marks = save_marks  # type: ignore[attr-defined]
    await guard.changes.reload("r", observed=False, mark=D(carried))
    spec = guard.engine.get("r")
    assert spec is not None and spec.high_water_mark == D(mark) and spec.activation_price == D(activation)
    assert writes == saved


TRAIL = D("0.1")


@pytest.mark.parametrize(("patch", "band"), [
    # inactive again: nothing fires below, the new activation price (exclusive) bounds it above
    ({"activation": "0.90"}, SourceBand(BEST_BID, None, D("0.90"), False, TRAIL)),
    ({"activation": "0.75"}, SourceBand(BEST_BID, D("0.72"), D("0.80"), True, TRAIL)),
    ({"trail": "5"}, SourceBand(BEST_BID, D("0.76"), D("0.80"), True, D("0.05"))),
    ({"trail": "20"}, SourceBand(BEST_BID, D("0.64"), D("0.80"), True, D("0.2"))),
])
def test_a_patch_changes_the_published_band(patch: dict[str, str], band: SourceBand) -> None:
    engine = risen(["0.80"])
    before = engine.published_band(A)
    assert before is not None and before.sources == (SourceBand(BEST_BID, D("0.72"), D("0.80"), True, TRAIL),)
    engine.take_band_changes()
    engine.upsert(ts(patch.get("activation", "0.70"), patch.get("trail", "10"), "0"))
    assert engine.take_band_changes() == {A}  # the publisher computes the asset's band again
    published = engine.published_band(A)
    assert published is not None and published.sources == (band,)
    lo, hi, inclusive = band.lo, band.hi, band.hi_inclusive
    assert engine.band(A) == ((Source.BEST_BID, lo, hi, inclusive),)  # guard's own tick filter agrees
