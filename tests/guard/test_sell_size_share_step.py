"""A trigger's SELL is never smaller than one share step (0.01), the executor's smallest order, even when the
market's minimum is not known (0): one smaller is refused by the executor (INVALID_ORDER), which consumed the
trigger (FAILED) instead of deferring it behind the SELL in flight or skipping it with a reason."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.guard.domain import sell_sizing
from services.guard.domain.trigger_model import Reason

D = Decimal
STEP = D("0.01")


def test_a_whole_position_below_one_share_step_is_not_sent_when_the_market_minimum_is_unknown() -> None:
    # 10.005 held (a BUY's fee taken in shares), a 10-share SELL in flight: 0.005 is left to size on
    out = sell_sizing.sell_size(size=D(0), sell_fraction=D(1), held=D("10.005"), in_flight=D("10"),
                                min_order_size=D(0))
    assert (out.size, out.reason, out.sendable) == (D(0), Reason.SIZE_BELOW_MIN_ORDER, False)


def test_a_size_trigger_capped_below_one_share_step_is_not_sent() -> None:
    out = sell_sizing.sell_size(size=D(5), sell_fraction=D(0), held=D("5.004"), in_flight=D("5"),
                                min_order_size=D(0))
    assert (out.size, out.reason, out.sendable) == (D(0), Reason.SIZE_BELOW_MIN_ORDER, False)


@settings(max_examples=400, deadline=None)
@given(st.decimals(min_value=0, max_value=100, places=3), st.decimals(min_value=0, max_value=1, places=4),
       st.decimals(min_value=0, max_value=100, places=6), st.decimals(min_value=0, max_value=100, places=6),
       st.sampled_from([D(0), D(1), D(5)]))
def test_a_sell_is_at_least_one_share_step_and_the_market_minimum(
        size: Decimal, fraction: Decimal, held: Decimal, in_flight: Decimal, minimum: Decimal) -> None:
    out = sell_sizing.sell_size(size=size, sell_fraction=fraction if size == 0 else D(0), held=held,
                                in_flight=in_flight, min_order_size=minimum)
    available = max(held - in_flight, D(0))
    assert 0 <= out.size <= available
    if out.sendable:
        assert out.size >= max(minimum, STEP)
        remainder = available - out.size
        assert remainder == 0 or remainder >= minimum
