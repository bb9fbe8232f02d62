"""A fresh price received before a trailing stop of its asset and source was armed (guard lags the log by less than
tick_max_age_s) fires what it crosses but lifts no mark and activates nothing: by the contract a trailing stop
tracks the highest price once armed (test_late_marks holds the same for a price read too late to fire on)."""

from __future__ import annotations

from decimal import Decimal

from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.inprocess import NOW_NS, in_process_guard, price_tick

A = "asset-1"
D = Decimal
SHARES = D(1000)


def _trailing(tid: str = "r", mark: str = "0") -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.TRAILING_STOP, trail_pct=D("10"), high_water_mark=D(mark))


async def test_a_fresh_price_from_before_the_stop_was_armed_does_not_activate_it() -> None:
    """Armed at NOW at 0.70 (trail 10 %: sells at or below 0.63). Guard reads, 1.5 s late (still fresh), the 0.80
    ingest received before the stop existed: taken as the mark (level 0.72), the next bid 0.70 sells the position."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_trailing(), armed_ns=NOW_NS)
    guard.changed(A)
    await guard.on_tick(price_tick("0.80", A, age_s=1.5))
    out = await guard.on_tick(price_tick("0.70", A))
    await guard.drain()
    sold = SHARES if out.fired else D(0)
    assert not out.fired, f"SOLD {sold} shares at 0.70 on a mark of 0.80 from before the stop was armed"
    spec = guard.engine.get("r")
    assert spec is not None and spec.high_water_mark == D("0.70")


async def test_the_same_price_received_after_the_arm_activates_it() -> None:
    """Ingest checks the current book against the new stop's band and sends it again, stamped after the arm: the
    same prices as the tick read before must not be skipped as unchanged."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_trailing(), armed_ns=NOW_NS)
    guard.changed(A)
    await guard.on_tick(price_tick("0.80", A, age_s=1.5))
    assert guard.engine.get("r").high_water_mark == 0  # type: ignore[union-attr]
    await guard.on_tick(price_tick("0.80", A, age_s=-0.001))
    assert guard.engine.get("r").high_water_mark == D("0.80")  # type: ignore[union-attr]


async def test_a_fresh_price_from_before_the_arm_still_fires_a_stop_crossed() -> None:
    """A stored mark (a resync, a PATCH of the trail) keeps firing on any fresh price: only lifting waits."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_trailing(mark="0.80"), armed_ns=NOW_NS)
    guard.engine.upsert(TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.60")), armed_ns=NOW_NS)
    guard.changed(A)
    out = await guard.on_tick(price_tick("0.55", A, age_s=1.5))
    await guard.drain()
    assert sorted(f.spec.id for f in out.fired) == ["r", "s"]
    assert [f.spec.high_water_mark for f in out.fired if f.spec.id == "r"] == [D("0.80")]


async def test_the_stored_book_at_a_catch_up_is_todays_price_and_activates_a_new_stop() -> None:
    """coordinator.recheck reads the stored book now: however long ago it last changed, it is the price after the
    arm."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_trailing(), armed_ns=NOW_NS - 10**6)

    class _Book:
        best_bid, best_ask, last_trade_price = D("0.75"), D("0.77"), None
        venue_time_ms = updated_ms = (NOW_NS - 60 * 10**9) // 1_000_000  # unchanged for a minute

        def is_stale(self, *_a: object) -> bool:
            return False

    class _Markets:
        async def books_and_feed(self, assets: object) -> tuple[dict[str, _Book], object]:
            return {A: _Book()}, None

    guard.markets = _Markets()  # type: ignore[assignment]
    await guard.recheck(A)
    assert guard.engine.get("r").high_water_mark == D("0.75")  # type: ignore[union-attr]


async def test_a_fresh_price_after_the_arm_lifts_as_before() -> None:
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_trailing(), armed_ns=NOW_NS - 2 * 10**9)
    guard.changed(A)
    await guard.on_tick(price_tick("0.80", A, age_s=1.5))
    guard.evaluate(A, Prices(best_bid=D("0.79")), stale=False, info=TickInfo(None, 0, NOW_NS))
    out = await guard.on_tick(price_tick("0.72", A))
    await guard.drain()
    assert [f.spec.high_water_mark for f in out.fired] == [D("0.80")]
