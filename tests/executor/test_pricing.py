"""Tick snapping, bounds, slipped limit and the depth check."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.executor.domain.pricing import check_depth, clamp_to_bounds, slipped_limit, snap_down, snap_safe, snap_up

D = Decimal


@pytest.mark.parametrize(("price", "tick", "down", "up"), [
    (D("0.355"), D("0.01"), D("0.35"), D("0.36")),
    (D("0.35"), D("0.01"), D("0.35"), D("0.35")),
    (D("0.0351"), D("0.001"), D("0.035"), D("0.036")),
    (D("0.5"), D("0.001"), D("0.500"), D("0.500")),
    (D("0.99999"), D("0.0001"), D("0.9999"), D("1.0000")),
    (D("0.123"), D("0.1"), D("0.1"), D("0.2")),
])
def test_snap(price: Decimal, tick: Decimal, down: Decimal, up: Decimal) -> None:
    assert snap_down(price, tick) == down and str(snap_down(price, tick)) == str(down)
    assert snap_up(price, tick) == up
    assert snap_safe(price, tick, True) == down and snap_safe(price, tick, False) == up


@pytest.mark.parametrize(("price", "tick", "expected"), [
    (D("0"), D("0.01"), D("0.01")),
    (D("1"), D("0.01"), D("0.99")),
    (D("0.5"), D("0.01"), D("0.50")),
    (D("0.9995"), D("0.001"), D("0.999")),
])
def test_clamp_to_bounds(price: Decimal, tick: Decimal, expected: Decimal) -> None:
    assert clamp_to_bounds(price, tick) == expected


@pytest.mark.parametrize(("best", "bps", "tick", "buying", "expected"), [
    (D("0.50"), 200, D("0.01"), True, D("0.51")),
    (D("0.50"), 200, D("0.01"), False, D("0.49")),
    (D("0.50"), 150, D("0.01"), True, D("0.50")),  # 0.5075 snapped down
    (D("0.50"), 150, D("0.01"), False, D("0.50")),  # 0.4925 snapped up
    (D("0.035"), 500, D("0.001"), True, D("0.036")),  # 0.03675 → 0.036
    (D("0.98"), 500, D("0.01"), True, D("0.99")),  # 1.029 → bound 0.99
    (D("0.02"), 9000, D("0.01"), False, D("0.01")),  # 0.002 → bound 0.01
    (D("0.50"), 0, D("0.01"), True, D("0.50")),
    # a best price on a finer grid than the tick priced on (the market went 0.01 → 0.001): nothing within the
    # tolerance, where moving the limit into [tick, 1 − tick] would pay 0.01 for an ask of 0.005, or take 0.99
    (D("0.005"), 200, D("0.01"), True, None),
    (D("0.997"), 0, D("0.01"), False, None),
    (D("0.009"), 2000, D("0.01"), True, D("0.01")),  # 0.0108: 0.01 is within the tolerance
])
def test_slipped_limit(best: Decimal, bps: int, tick: Decimal, buying: bool, expected: Decimal | None) -> None:
    assert slipped_limit(best, bps, tick, buying) == expected


ASKS = ((D("0.50"), D("20")), (D("0.51"), D("20")), (D("0.60"), D("1000")))
BIDS = ((D("0.49"), D("30")), (D("0.45"), D("1000")))


@pytest.mark.parametrize(("buying", "qty", "levels", "bps", "given", "ok", "reason", "limit"), [
    # BUY $20 at best 0.50 ± 2 % → limit 0.51; 10 + 10.2 = $20.2 available ≥ $10 needed.
    (True, D("20"), ASKS, 200, None, True, "", D("0.51")),
    # BUY $41 → need 20.5, available 20.2 → skip.
    (True, D("41"), ASKS, 200, None, False, "INSUFFICIENT_DEPTH", D("0.51")),
    # Exactly 50 %: $40.4 needs 20.2 → ok.
    (True, D("40.4"), ASKS, 200, None, True, "", D("0.51")),
    # No slippage: only the 0.50 level ($10) counts.
    (True, D("20"), ASKS, 0, None, True, "", D("0.50")),
    (True, D("20.02"), ASKS, 0, None, False, "INSUFFICIENT_DEPTH", D("0.50")),
    # Given limit overrides the slippage and is snapped safely.
    (True, D("500"), ASKS, 0, D("0.6049"), True, "", D("0.60")),
    # SELL 50 shares at best 0.49 − 10 % → 0.441 snapped up 0.45: 1030 available.
    (False, D("50"), BIDS, 1000, None, True, "", D("0.45")),
    (False, D("61"), BIDS, 100, None, False, "INSUFFICIENT_DEPTH", D("0.49")),
    (False, D("60"), BIDS, 100, None, True, "", D("0.49")),
    (True, D("5"), (), 200, None, False, "NO_LIQUIDITY", None),
    (True, D("0"), ASKS, 200, None, False, "INVALID_QUANTITY", None),
    (True, D("5"), ((D("0.005"), D("1000")),), 200, None, False, "NO_PRICE_WITHIN_SLIPPAGE", None),
])
def test_check_depth(buying, qty, levels, bps, given, ok, reason, limit) -> None:  # type: ignore[no-untyped-def]
    d = check_depth(buying=buying, quantity=qty, opposite=levels, tick=D("0.01"), max_slippage_bps=bps,
                    given_limit=given)
    assert (d.ok, d.reason, d.limit_price) == (ok, reason, limit)


@pytest.mark.parametrize("tick", [D("0"), D("-0.01"), D("0.5"), D("1")])
def test_check_depth_rejects_bad_tick(tick: Decimal) -> None:
    d = check_depth(buying=True, quantity=D("1"), opposite=ASKS, tick=tick, max_slippage_bps=100)
    assert not d.ok and d.reason == "INVALID_TICK_SIZE"


@given(st.integers(1, 999), st.integers(0, 5000), st.sampled_from([D("0.01"), D("0.001"), D("0.0001")]),
       st.booleans())
def test_slipped_limit_is_on_grid_in_bounds_and_within_tolerance(best_milli, bps, tick, buying) -> None:  # type: ignore[no-untyped-def]
    best = snap_down(D(best_milli) / 1000, tick)
    if best < tick or best > 1 - tick:
        return
    limit = slipped_limit(best, bps, tick, buying)
    assert tick <= limit <= 1 - tick
    assert limit % tick == 0
    factor = D(bps) / 10_000
    if buying:
        assert limit <= max(best * (1 + factor), tick) and (limit >= best or limit == 1 - tick)
    else:
        assert limit >= min(best * (1 - factor), 1 - tick) and (limit <= best or limit == tick)


@given(st.integers(1, 999), st.integers(0, 5000), st.sampled_from([D("0.01"), D("0.001")]), st.booleans())
def test_a_slipped_limit_keeps_the_tolerance_whatever_grid_the_best_price_is_on(
        best_milli: int, bps: int, tick: Decimal, buying: bool) -> None:
    """The best price as a book shows it (its grid may be finer than the tick priced on): the limit, when there
    is one, never pays more (BUY) or takes less (SELL) than the tolerance allows, and lies on the tick's grid."""
    best = D(best_milli) / 1000
    limit = slipped_limit(best, bps, tick, buying)
    if limit is None:
        return
    factor = D(bps) / 10_000
    assert tick <= limit <= 1 - tick and limit % tick == 0
    assert limit <= best * (1 + factor) if buying else limit >= best * (1 - factor)
