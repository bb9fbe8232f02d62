"""A price read too late to fire on lifts trailing marks, except one received before a trailing stop of its asset and
source was armed or changed: a mark taken from a price before the stop existed (a lagging guard, the backlog read
after the tick stream reconnects, a PATCH that raised the activation price) would sell the position too early. By
the contract a trailing stop tracks the highest price once armed and activated."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.inprocess import NOW_NS, in_process_guard, price_tick

A = "asset-1"
D = Decimal
SHARES = D(1000)


def _new_trailing_stop(activation: str = "0") -> TriggerSpec:
    """As control creates it (trigger_rules.new_trigger): highWaterMark 0, trail 10 %."""
    return TriggerSpec("r", A, Kind.TRAILING_STOP, trail_pct=D("10"), activation_price=D(activation))


async def test_a_trailing_stop_armed_while_guard_lags_takes_its_mark_from_a_price_before_it_existed() -> None:
    """The position trades at 0.80, then 0.70. The user arms a 10 % trailing stop at NOW, when the price is 0.70:
    by the contract it tracks from 0.70 (sell at or below 0.63). Guard is 5 s behind the tick log (a GC pause, a
    burst, a slow Redis): it reads the 0.80 tick ingest received 5 s BEFORE the stop existed, too late to fire on,
    and now activates the stop at 0.80 (level 0.72). The next fresh tick at 0.70 SELLS the whole position at 0.70,
    a price the stop must not sell at: 1000 shares sold 0.07 above the user's stop level, and the position is gone
    if the price recovers."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_new_trailing_stop(), armed_ns=NOW_NS)  # trigger_changes.reload: armed now
    guard.changed(A)
    await guard.on_tick(price_tick("0.80", A, age_s=5.0))  # received 5 s before the stop was armed
    await guard.on_tick(price_tick("0.70", A, age_s=4.0))  # the fall, also before the stop existed
    out = await guard.on_tick(price_tick("0.70", A))  # fresh, the price the stop was armed at
    spec = guard.engine.get("r")
    mark = spec.high_water_mark if spec is not None else next(f.spec.high_water_mark for f in out.fired)
    await guard.drain()
    sold = SHARES if out.fired else D(0)
    assert mark == D("0.70"), f"mark {mark}: taken from a price received before the stop was armed"
    assert not out.fired, f"SOLD {sold} shares at 0.70; the stop (armed at 0.70, trail 10 %) sells at <= 0.63"


async def test_a_trailing_stop_armed_during_a_tick_stream_outage_is_fired_by_the_backlog_peak() -> None:
    """The tick stream reconnects (TickFeed: catch-up of the stored books, then the backlog from the last cursor).
    A trailing stop armed during the outage is activated by the stored book (fresh, 0.70), then the backlog -- ticks
    ingest received up to 30 s earlier, before the stop existed -- lifts its mark to the 0.80 peak of the outage.
    The next fresh tick at 0.70 sells the position."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_new_trailing_stop(), armed_ns=NOW_NS)
    guard.changed(A)
    # catch-up: the stored book, fresh (coordinator.recheck: trusted = not stale)
    guard.evaluate(A, Prices(best_bid=D("0.70")), stale=False, trusted=True,
                   info=TickInfo(None, 0, NOW_NS))
    # the backlog, oldest first: the outage's peak came before the stop was armed
    await guard.on_tick(price_tick("0.80", A, age_s=30.0))
    await guard.on_tick(price_tick("0.70", A, age_s=20.0))
    out = await guard.on_tick(price_tick("0.70", A))
    await guard.drain()
    assert not out.fired, "the stop armed at 0.70 sold the position at 0.70 on a mark from before it existed"


@pytest.mark.parametrize("late_s", [5.0, 60.0])
async def test_a_patch_raising_the_activation_price_is_activated_by_a_price_from_before_the_patch(
        late_s: float) -> None:
    """PATCH raises activationPrice to 0.75, above the mark 0.60: the stop is inactive until the price reaches 0.75
    (trigger_rules.mark_after_patch). A lagging guard reads a 0.80 received before the PATCH, activates the stop at
    0.80 (level 0.72) and the fresh 0.70 sells, though the price never reached 0.75 after the PATCH."""
    guard, _store = in_process_guard([TriggerSpec("r", A, Kind.TRAILING_STOP, trail_pct=D("10"),
                                                  high_water_mark=D("0.60"))], stub_fires=True)
    guard.engine.upsert(_new_trailing_stop(activation="0.75"), armed_ns=NOW_NS)  # the PATCHed version (mark 0)
    guard.changed(A)
    await guard.on_tick(price_tick("0.80", A, age_s=late_s))
    out = await guard.on_tick(price_tick("0.70", A))
    await guard.drain()
    assert not out.fired, "inactive since the PATCH (the price never reached 0.75 since), yet it sold at 0.70"


async def test_a_copy_fills_trailing_exit_sells_the_position_it_was_armed_for_at_once() -> None:
    """Subscription exits trailingStopPct 10: the copy BUY fills 1000 shares at 0.70 (leader bought the dip after
    0.80) and guard arms the exit with no mark and no activation (exit_plans.plan: 'the mark starts at the first
    price the stop watches'). Guard lags the tick log by 3 s (> tick_max_age_s 2): the pre-fill 0.80 activates the
    exit at 0.80 (level 0.72), and the next fresh bid, 0.69, sells the 1000 shares just bought at 0.70: -$10 plus
    fees, the copied position closed while the leader still holds. By the contract the mark starts at 0.69 and the
    exit sells only at <= 0.621."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(TriggerSpec("grp:trailing_stop", A, Kind.TRAILING_STOP, trail_pct=D("10"),
                                    oco_group="grp"), armed_ns=NOW_NS)
    guard.changed(A)
    await guard.on_tick(price_tick("0.80", A, age_s=3.0))  # before the BUY filled
    out = await guard.on_tick(price_tick("0.69", A))
    await guard.drain()
    loss = (D("0.70") - D("0.69")) * SHARES if out.fired else D(0)
    assert not out.fired, f"the fresh copy was sold at once at 0.69: {loss} USD lost plus fees"
