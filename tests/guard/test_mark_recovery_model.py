"""The start-up mark replay against a guard that never stopped (pure model, real engine): random prices, a mark save,
a crash, prices logged while guard was down, a restart that loads the saved mark and replays the log after the save,
the catch-up on the current book, and the prices after it.

- The restarted stop's mark equals the mark of the guard that never stopped, as of the last price before the restart
  (the old code's was the saved one, lower after a rise).
- It never sells where the guard that never stopped would not have sold by then (no wrong fire).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.guard.domain.mark_replay import PriceHighs, recovered_marks
from services.guard.domain.outcomes import Prices
from services.guard.domain.trigger_index import Engine, load
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec

D = Decimal
A = "asset-1"
MS = 1_000_000
ARMED_NS = 1  # the stop's row changed long before the prices below
MARGIN_NS = 1_000 * MS


def _stop(mark: Decimal, activation: Decimal) -> TriggerSpec:
    return TriggerSpec("t", A, Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=D("10"), activation_price=activation,
                       high_water_mark=mark)


def _fires(engine: Engine, price: Decimal, at_ns: int) -> bool:
    return bool(engine.on_tick(A, Prices(best_bid=price), stale=False, received_ns=at_ns).fired)


def _mark(engine: Engine) -> Decimal | None:
    spec = engine.get("t")
    return None if spec is None else spec.high_water_mark


@dataclass
class Run:
    """One crash and restart: where the prices of the never-stopped guard and of the restarted one led."""

    reference_fire: int | None  # the index of the price the never-stopped guard sold on
    restarted_fire: int | None
    reference_mark: Decimal | None  # as of the last price before the restart (None: sold by then)
    recovered_mark: Decimal | None  # the restarted guard's after the replay
    saved_mark: Decimal  # what the old code restarted with


def _run(cents: list[int], stored: Decimal, activation: Decimal, flush: int, crash: int, restart: int,
         replay: bool = True) -> Run:
    prices = [D(c) / 100 for c in cents]
    at = [(10_000 + i) * 1000 * MS for i in range(len(prices))]  # a second apart, well after the arm
    reference = load([_stop(stored, activation)])
    reference_fire = None
    reference_mark = None
    for i, price in enumerate(prices):
        if i == restart:
            reference_mark = _mark(reference)
        if reference_fire is None and _fires(reference, price, at[i]):
            reference_fire = i
    guard = load([_stop(stored, activation)])
    saved = stored
    for i in range(crash):  # live until the crash, saving the mark after the price at ``flush``
        if _fires(guard, prices[i], at[i]):
            return Run(reference_fire, i, reference_mark, None, saved)
        if i == flush:
            saved = _mark(guard) or stored
    restarted = load([_stop(saved, activation)])
    recovered = saved
    if replay:  # the log after the save through the last price before the restart
        highs = PriceHighs()
        for i in range(flush + 1, restart):
            highs.add(A, at[i], Prices(best_bid=prices[i]))
        lifted = recovered_marks([_stop(saved, activation)], {"t": ARMED_NS}, highs, MARGIN_NS)
        if "t" in lifted:
            recovered = lifted["t"]
            restarted.upsert(_stop(recovered, activation))
    for i in range(restart, len(prices)):  # the catch-up on the current book, then the prices after it
        if _fires(restarted, prices[i], at[i]):
            return Run(reference_fire, i, reference_mark, recovered, saved)
    return Run(reference_fire, None, reference_mark, recovered, saved)


_SCENARIOS = st.integers(8, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(30, 90), min_size=n, max_size=n),  # the bids, in cents
    st.sampled_from([D(0), D("0.5"), D("0.55"), D("0.6")]),  # the stored mark
    st.sampled_from([D(0), D("0.5"), D("0.7")]),  # the activation price
    st.integers(0, n - 3).flatmap(lambda f: st.tuples(
        st.just(f), st.integers(f + 1, n - 2).flatmap(lambda c: st.tuples(st.just(c), st.integers(c, n - 1)))))))


@settings(max_examples=400, deadline=None)
@given(_SCENARIOS)
def test_a_restart_recovers_the_mark_of_a_guard_that_never_stopped_and_never_sells_earlier(
        scenario: tuple[list[int], Decimal, Decimal, tuple[int, tuple[int, int]]]) -> None:
    cents, stored, activation, (flush, (crash, restart)) = scenario
    if 0 < stored < activation:
        stored = D(0)  # never stored: a PATCH raising the activation price above the mark resets it
    run = _run(cents, stored, activation, flush, crash, restart)
    if run.restarted_fire is not None:  # no wrong fire: the never-stopped guard sold on this price or before it
        assert run.reference_fire is not None and run.reference_fire <= run.restarted_fire
    if run.recovered_mark is not None and run.reference_mark is not None:
        assert run.recovered_mark == run.reference_mark  # the mark as a guard that never stopped had it


def test_the_old_restart_sold_late_where_the_replay_sells_at_the_catch_up() -> None:
    """Saved at 0.55, the bid rose to 0.60 and the guard crashed; while it was down it fell to 0.53. The guard that
    never stopped sold on the 0.53 (level 0.54); the restarted one sells on the current book, not at 0.49."""
    cents = [55, 60, 58, 53, 53, 52, 50, 49]
    fixed = _run(cents, D("0.55"), D(0), flush=0, crash=2, restart=4)
    old = _run(cents, D("0.55"), D(0), flush=0, crash=2, restart=4, replay=False)
    assert (fixed.reference_fire, fixed.recovered_mark, fixed.restarted_fire) == (3, D("0.60"), 4)
    assert (old.recovered_mark, old.restarted_fire) == (D("0.55"), 7)
