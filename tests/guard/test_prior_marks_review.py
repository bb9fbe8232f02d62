"""Review of PriorMarks (an older price read after a stored book fires a trailing stop at its time's mark): the mark
of an older price's time is never taken lower than it was, so no crossing that fired before is missed.

Stop ``r``: trail 10 %, mark 0.55 (level 0.495) unless said otherwise. Times are seconds before ``NOW_NS``.
"""

from __future__ import annotations

from decimal import Decimal

from services.guard.coordinator import Guard
from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import Engine, load
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.inprocess import NOW_NS, in_process_guard, price_tick

A = "asset-1"
D = Decimal
S = 1_000_000_000


def _trailing(tid: str = "r", mark: str = "0.55", activation: str = "0", trail: str = "10") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, trail_pct=D(trail), activation_price=D(activation),
                       high_water_mark=D(mark))


def _at(ago_s: float) -> int:
    return NOW_NS - int(ago_s * S)


def _started(guard: Guard) -> Guard:
    """The catch-up of the guard's start, a minute ago at the mark (it lifts nothing)."""
    _stored_book(guard, "0.55", ago_s=60.0)
    return guard


def _engine(*specs: TriggerSpec) -> Engine:
    engine = load(specs or [_trailing()])
    engine.on_tick(A, Prices(best_bid=D("0.55")), stale=False, received_ns=_at(60.0), snapshot=True)  # the start's
    return engine


def _stored_book(guard: Guard, bid: str, ago_s: float = 0.0) -> None:
    """coordinator.recheck of a fresh stored book read ``ago_s`` before now."""
    guard.evaluate(A, Prices(best_bid=D(bid)), stale=False, trusted=True, seen_ns=_at(ago_s),
                   info=TickInfo(None, 0, _at(ago_s) - S))


def _fired(engine: Engine, bid: str, ago_s: float) -> list[str]:
    return [f.spec.id for f in engine.on_tick(A, Prices(best_bid=D(bid)), stale=False, received_ns=_at(ago_s)).fired]


async def test_a_price_between_two_stored_books_fires_at_the_mark_the_first_one_set() -> None:
    """The tick stream is down: the catch-up after the back-off reads the stored book 1.8 s ago (0.60: mark 0.60,
    level 0.54), the one when the stream is open again reads it now (0.61). The backlog's 0.53 of 1.0 s ago came
    after the 0.60: it crosses 0.54 and sells (it did before PriorMarks); judged by the mark from before the first
    stored book (0.55, level 0.495) it did not."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _started(guard)
    _stored_book(guard, "0.60", ago_s=1.8)
    _stored_book(guard, "0.61")
    out = await guard.on_tick(price_tick("0.53", A, age_s=1.0))
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ["r"], "a 0.53 after the bid was 0.60 did not sell"


async def test_a_stored_book_evaluated_late_lifts_the_marks_of_the_later_one() -> None:
    """Two rechecks under way at once: the one that read the book 0.5 s ago (0.60) is evaluated first, the one that
    read it 1.0 s ago (0.62) second. The 0.555 of 0.8 s ago came after the 0.62 (level 0.558): it sells."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _started(guard)
    _stored_book(guard, "0.60", ago_s=0.5)
    _stored_book(guard, "0.62", ago_s=1.0)
    out = await guard.on_tick(price_tick("0.555", A, age_s=0.8))
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ["r"], "a 0.555 after the bid was 0.62 did not sell"


def test_an_older_price_from_before_an_arm_still_lifts_the_mark_of_its_time() -> None:
    """Stop 'b' of the same asset is armed 0.5 s ago (prices received before lift no mark of today). The backlog's
    0.58 (1.8 s ago, r was active then: mark 0.58, level 0.522) then 0.52 (1.5 s ago): r sells, as it did before
    PriorMarks (today's level 0.54)."""
    engine = _engine()
    engine.on_tick(A, Prices(best_bid=D("0.60")), stale=False, received_ns=NOW_NS, snapshot=True)
    engine.upsert(_trailing("b", mark="0", activation="0.90"), armed_ns=_at(0.5))
    assert _fired(engine, "0.58", 1.8) == []
    assert _fired(engine, "0.52", 1.5) == ["r"], "a 0.52 after the bid was 0.58 did not sell"


def test_a_stale_older_price_from_before_an_arm_still_lifts_the_mark_of_its_time() -> None:
    """As above, the 0.58 read too late to fire on (stale, trusted): it lifted r's mark of its time all the same."""
    engine = _engine()
    engine.on_tick(A, Prices(best_bid=D("0.60")), stale=False, received_ns=NOW_NS, snapshot=True)
    engine.upsert(_trailing("b", mark="0", activation="0.90"), armed_ns=_at(0.5))
    engine.on_tick(A, Prices(best_bid=D("0.58")), stale=True, trusted=True, received_ns=_at(2.5))
    assert _fired(engine, "0.52", 1.5) == ["r"], "a 0.52 after the bid was 0.58 did not sell"


def test_a_stored_book_read_before_an_arm_keeps_the_marks_of_an_earlier_one() -> None:
    """A recheck reads the book (0.60) 1.0 s ago; a stop of the asset is armed 0.5 s ago, and a second recheck that
    read the book before that arm (lifts nothing) is evaluated now. The backlog's 0.52 of 1.5 s ago came before the
    first 0.60: it does not sell (mark then 0.55, level 0.495)."""
    engine = _engine()
    engine.on_tick(A, Prices(best_bid=D("0.60")), stale=False, received_ns=_at(1.0), snapshot=True)
    engine.upsert(_trailing("b", mark="0", activation="0.90"), armed_ns=_at(0.5))
    engine.on_tick(A, Prices(best_bid=D("0.60")), stale=False, received_ns=_at(0.6), snapshot=True)
    assert _fired(engine, "0.52", 1.5) == [], "sold on a 0.52 from before the 0.60 that set the mark 0.60"


def test_a_newer_price_read_too_late_ends_the_prior_marks() -> None:
    """A stale tick received after the stored book says the log is read past it: the band is today's again."""
    engine = _engine()
    engine.on_tick(A, Prices(best_bid=D("0.60")), stale=False, received_ns=_at(3.0), snapshot=True)
    band = engine.band(A)
    assert band is not None and band[0][2:] == (D("0.55"), True)
    engine.on_tick(A, Prices(best_bid=D("0.57")), stale=True, trusted=True, received_ns=_at(2.5))
    band = engine.band(A)
    assert band is not None and band[0][2:] == (D("0.60"), True)
    assert _fired(engine, "0.53", 1.0) == ["r"]


async def test_the_stored_book_of_the_start_is_not_ahead_of_the_log() -> None:
    """Guard restarts: r's mark in PostgreSQL is 0.55 (the old process lifted it to 0.60 at the bid's high and had
    not saved it yet, or never read that tick). The new process takes its cursor, then reads the stored book (0.61);
    the tick logged in between, 0.53, is older than that stored book, but the marks it would be judged by are the
    loaded ones, not those of its time: it sells, as it did before PriorMarks (today's mark 0.61, level 0.549)."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _stored_book(guard, "0.61")
    out = await guard.on_tick(price_tick("0.53", A, age_s=0.05))
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ["r"], "a crossing read after the start's catch-up did not sell"
