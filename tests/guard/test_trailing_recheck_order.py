"""A stored book evaluated ahead of the tick log (coordinator.recheck: the catch-up of a reconnect, a re-arm, a
resync) lifts trailing marks to today's price; a fresh tick read after it but received before it (the backlog after
a reconnect, a lagging guard) is an older price, and fires a trailing stop only at the mark as it was then."""

from __future__ import annotations

from decimal import Decimal

from services.guard.coordinator import Guard
from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.inprocess import NOW_NS, in_process_guard, price_tick

A = "asset-1"
D = Decimal


def _trailing(tid: str = "r", mark: str = "0.55", activation: str = "0") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, trail_pct=D("10"), activation_price=D(activation),
                       high_water_mark=D(mark))


def _stored_book(guard: Guard, bid: str) -> None:
    """coordinator.recheck of a fresh stored book, read now."""
    guard.evaluate(A, Prices(best_bid=D(bid)), stale=False, trusted=True, seen_ns=NOW_NS,
                   info=TickInfo(None, 0, NOW_NS - 10**9))


async def test_an_older_price_read_after_the_catch_up_does_not_fire_on_the_mark_it_set() -> None:
    """Mark 0.55 (level 0.495). While the tick stream was down the bid went 0.52, then 0.60. On reconnect the stored
    book (0.60) lifts the mark to 0.60 (level 0.54); the backlog then brings the 0.52 received 1.5 s ago (fresh):
    compared with the 0.60 that came after it, it SELLS the position, though the bid never was at or below 0.54 after
    0.60 (nor at or below 0.495 before it)."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _stored_book(guard, "0.60")
    out = await guard.on_tick(price_tick("0.52", A, age_s=1.5))  # the backlog, older than the stored book
    await guard.on_tick(price_tick("0.60", A, age_s=1.0))
    await guard.drain()
    assert not out.fired, "sold on a 0.52 from before the 0.60 that set the mark 0.60"
    spec = guard.engine.get("r")
    assert spec is not None and spec.high_water_mark == D("0.60")
    # a fall after the catch-up fires at the mark it set
    later = await guard.on_tick(price_tick("0.54", A, age_s=0.5))
    await guard.drain()
    assert [(f.spec.id, f.spec.high_water_mark) for f in later.fired] == [("r", D("0.60"))]


async def test_an_older_price_still_fires_at_the_mark_of_its_time() -> None:
    """The backlog's 0.58 lifted the mark of its time to 0.58 (level 0.522), and its 0.52 fires at that level (the
    fire carries today's mark, whose level 0.54 it crosses too: a fire handed back re-arms the stop at it)."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _stored_book(guard, "0.60")
    assert not (await guard.on_tick(price_tick("0.58", A, age_s=1.8))).fired
    out = await guard.on_tick(price_tick("0.52", A, age_s=1.5))
    await guard.drain()
    assert [(f.spec.id, f.spec.high_water_mark) for f in out.fired] == [("r", D("0.60"))]  # today's mark (crossed too)


async def test_an_older_price_below_the_old_level_fires() -> None:
    """The bid fell to 0.49 (at or below 0.495) before it rose to 0.60: a crossing of its time, fired."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _stored_book(guard, "0.60")
    out = await guard.on_tick(price_tick("0.49", A, age_s=1.5))
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ["r"]


async def test_a_stop_the_stored_book_activated_is_not_fired_by_an_older_price() -> None:
    """Activation 0.58: the stored book (0.60) activates it; the older 0.52 came while it was still inactive."""
    guard, _store = in_process_guard([_trailing(mark="0", activation="0.58")], stub_fires=True)
    _stored_book(guard, "0.60")
    out = await guard.on_tick(price_tick("0.52", A, age_s=1.5))
    await guard.drain()
    assert not out.fired, "an inactive stop fired on a price from before its activation"
    spec = guard.engine.get("r")
    assert spec is not None and spec.high_water_mark == D("0.60")


async def test_an_older_price_read_too_late_to_fire_on_lifts_the_mark_of_its_time() -> None:
    """The backlog's 0.58, 3 s old (stale: it only lifts), then its 0.52, 1.5 s old: fired at the mark 0.58."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _stored_book(guard, "0.60")
    assert not (await guard.on_tick(price_tick("0.58", A, age_s=3.0))).fired
    out = await guard.on_tick(price_tick("0.52", A, age_s=1.5))
    await guard.drain()
    assert [(f.spec.id, f.spec.high_water_mark) for f in out.fired] == [("r", D("0.60"))]


async def test_once_the_log_is_read_past_the_stored_book_the_band_is_todays_again() -> None:
    """While older prices may come, a price above a prior mark is evaluated (guard's band and ingest's stop at it);
    a tick received after the stored book ends that."""
    guard, _store = in_process_guard([_trailing()], stub_fires=True)
    _stored_book(guard, "0.60")
    band = guard.engine.band(A)
    assert band is not None and band[0][2:] == (D("0.55"), True)
    await guard.on_tick(price_tick("0.61", A, age_s=-0.001))  # received after the stored book
    band = guard.engine.band(A)
    assert band is not None and band[0][2:] == (D("0.61"), True)
    out = await guard.on_tick(price_tick("0.549", A, age_s=-0.002))  # 0.61 x 0.9
    await guard.drain()
    assert [(f.spec.id, f.spec.high_water_mark) for f in out.fired] == [("r", D("0.61"))]


async def test_a_stop_the_stored_book_did_not_lift_fires_on_an_older_price_as_before() -> None:
    """'hi' (mark 0.66, level 0.594) was above the stored book's 0.60: its mark is the same then and now."""
    guard, _store = in_process_guard([_trailing(), _trailing("hi", mark="0.66")], stub_fires=True)
    _stored_book(guard, "0.60")
    out = await guard.on_tick(price_tick("0.52", A, age_s=1.5))
    await guard.drain()
    assert [(f.spec.id, f.spec.high_water_mark) for f in out.fired] == [("hi", D("0.66"))]
    assert guard.engine.get("r") is not None
