"""The arm-time rule is per trailing stop, not per book: a price received before stop X was armed (or changed) lifts
no mark of X, but lifts the marks of the stops of the same asset and source armed before it (pure engine)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.guard.domain.outcomes import Prices
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec

A = "asset-1"
D = Decimal
S = 10**9
EARLY, LATE = 1 * S, 5 * S  # when r1 and r2 were armed


def _stop(tid: str, mark: str = "0.70", activation: str = "0") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, trail_pct=D("10"), activation_price=D(activation),
                       high_water_mark=D(mark))


def _engine(r1: TriggerSpec | None = None) -> Engine:
    engine = Engine()
    engine.upsert(r1 or _stop("r1"), armed_ns=EARLY)
    engine.upsert(_stop("r2"), armed_ns=LATE)
    return engine


def _tick(engine: Engine, bid: str, at_s: float, *, stale: bool = False) -> list[str]:
    out = engine.on_tick(A, Prices(best_bid=D(bid)), stale=stale, trusted=True, received_ns=int(at_s * S))
    return sorted(f.spec.id for f in out.fired)


def _marks(engine: Engine) -> dict[str, Decimal]:
    return {tid: spec.high_water_mark for tid in sorted(engine.ids()) if (spec := engine.get(tid)) is not None}


# (0.80 received at, read too late to fire on, marks after it, what a later 0.71 sells)
CASES = [
    (0.5, False, {"r1": D("0.70"), "r2": D("0.70")}, []),  # before both arms: lifts neither
    (0.5, True, {"r1": D("0.70"), "r2": D("0.70")}, []),
    (3.0, False, {"r1": D("0.80"), "r2": D("0.70")}, ["r1"]),  # after r1's arm, before r2's: lifts r1 only
    (3.0, True, {"r1": D("0.80"), "r2": D("0.70")}, ["r1"]),
    (5.0, False, {"r1": D("0.80"), "r2": D("0.80")}, ["r1", "r2"]),  # at r2's arm: lifts both
    (6.0, True, {"r1": D("0.80"), "r2": D("0.80")}, ["r1", "r2"]),
]


@pytest.mark.parametrize(("received_s", "stale", "marks", "sold"), CASES)
def test_a_price_lifts_the_stops_armed_before_it_was_received(received_s: float, stale: bool,
                                                              marks: dict[str, Decimal], sold: list[str]) -> None:
    """r1 armed at 1 s, r2 at 5 s (mark 0.70, trail 10 %: level 0.63). Guard then reads a 0.80 (received at
    ``received_s``): it lifts the marks of the stops armed by then (level 0.72); a 0.71 received at 7 s sells those."""
    engine = _engine()
    assert _tick(engine, "0.80", received_s, stale=stale) == []
    assert _marks(engine) == marks
    assert _tick(engine, "0.71", 7.0) == sold


def test_a_price_from_before_a_later_arm_activates_an_earlier_stop() -> None:
    """r1 (armed at 1 s) waits for 0.75; a 0.80 received at 3 s, read after r2's arm, activates it at 0.80."""
    engine = _engine(_stop("r1", mark="0", activation="0.75"))
    assert _tick(engine, "0.80", 3.0) == []
    assert _marks(engine)["r1"] == D("0.80")
    assert _tick(engine, "0.72", 7.0) == ["r1"]


def test_a_price_from_before_an_arm_still_fires_the_later_stop_on_todays_mark() -> None:
    engine = _engine()
    assert _tick(engine, "0.62", 3.0) == ["r1", "r2"]


def test_a_patch_moves_the_stop_to_its_new_arm_time_and_a_resync_keeps_it() -> None:
    """A PATCH at 6 s: a price received at 5.5 s lifts r1 no more (it predates the change); a resync's version of
    the same trigger (no arm time given) keeps r1's arm time."""
    engine = _engine()
    engine.upsert(_stop("r1", mark="0.70"), armed_ns=6 * S)
    engine.upsert(_stop("r1", mark="0.71"))
    assert _tick(engine, "0.80", 5.5) == []
    assert _marks(engine) == {"r1": D("0.71"), "r2": D("0.80")}


def test_settle_merges_the_epochs_read_past_and_keeps_unsaved_marks() -> None:
    """Once guard has read the log past r2's arm no price from before it comes: one epoch, with the mark r1 took
    from a price between the arms still reported for saving, and the published band's arm time r2's."""
    engine = _engine()
    _tick(engine, "0.80", 3.0)
    book = engine._books[A][_stop("r1").source]
    assert book.trail is not None and book.trail.epochs == 2
    engine.settle(4 * S)
    assert book.trail.epochs == 2
    assert engine.settle(5 * S) == 5 * S
    assert book.trail.epochs == 1
    assert engine.take_dirty_marks() == [(D("0.80"), ["r1"])]
    band = engine.published_band(A)
    assert band is not None and band.sources[0].armed_ns == LATE
    assert _tick(engine, "0.85", 5.5) == []
    assert _marks(engine) == {"r1": D("0.85"), "r2": D("0.85")}


def test_the_published_arm_time_is_the_latest_of_the_stops_left() -> None:
    """ingest's gate narrows a band only by prices stamped at or after its ``armed_ns``: each lifted every mark."""
    engine = _engine()
    band = engine.published_band(A)
    assert band is not None and band.sources[0].armed_ns == LATE
    engine.remove("r2")
    band = engine.published_band(A)
    assert band is not None and band.sources[0].armed_ns == EARLY


def test_a_stop_armed_before_the_log_read_joins_the_settled_epoch() -> None:
    engine = _engine()
    engine.settle(6 * S)
    engine.upsert(_stop("r3"), armed_ns=2 * S)  # guard's clock behind ingest's stamps: no price tells them apart
    book = engine._books[A][_stop("r3").source]
    assert book.trail is not None and book.trail.epochs == 1
    assert _tick(engine, "0.80", 6.5) == []
    assert _marks(engine) == {"r1": D("0.80"), "r2": D("0.80"), "r3": D("0.80")}
