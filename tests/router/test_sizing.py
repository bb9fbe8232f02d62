"""BUY sizing: every mode, the perf multiplier, the [minOrderUsd, maxOrderUsd] clamp."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.router.domain.model import Reason, SizingMode, SizingRules
from services.router.domain.sizing import Sized, size_buy
from tests.router.factories import trade

D = Decimal
FIXED = SizingMode.FIXED_USD
PROP = SizingMode.PROPORTIONAL
PCT = SizingMode.PERCENT_OF_BALANCE


@pytest.mark.parametrize(
    ("rules", "notional", "balance", "multiplier", "expected"),
    [
        (SizingRules(FIXED, fixed_usd=D("25")), "100", None, "1", D("25")),
        (SizingRules(FIXED, fixed_usd=D("25")), "100000", None, "1", D("25")),
        (SizingRules(PROP, ratio=D("0.05")), "100", None, "1", D("5")),
        (SizingRules(PROP, ratio=D("0.05")), "1234.56", None, "1", D("61.7280")),
        (SizingRules(PCT, percent_of_balance=D("2")), "100", D("1520.55"), "1", D("30.4110")),
        (SizingRules(PCT, percent_of_balance=D("100")), "100", D("80"), "1", D("80")),
        # the perf multiplier applies before the clamps
        (SizingRules(FIXED, fixed_usd=D("25")), "100", None, "1.5", D("37.5")),
        (SizingRules(PROP, ratio=D("0.1")), "100", None, "0.5", D("5")),
        # clamps
        (SizingRules(PROP, ratio=D("0.05"), min_order_usd=D("10")), "100", None, "1", D("10")),
        (SizingRules(PROP, ratio=D("0.05"), max_order_usd=D("3")), "100", None, "1", D("3")),
        (SizingRules(FIXED, fixed_usd=D("25"), max_order_usd=D("30")), "100", None, "1.5", D("30")),
        (SizingRules(FIXED, fixed_usd=D("25"), min_order_usd=D("1"), max_order_usd=D("250")), "5", None, "1",
         D("25")),
    ],
)
def test_size_buy_modes_multiplier_and_clamps(rules: SizingRules, notional: str, balance: Decimal | None,
                                              multiplier: str, expected: Decimal) -> None:
    result = size_buy(rules, trade(notional_usd=D(notional)), balance, D(multiplier))
    assert isinstance(result, Sized)
    assert result.amount == expected


@pytest.mark.parametrize(
    ("rules", "balance", "reason"),
    [
        (SizingRules(FIXED), None, Reason.INVALID_SUBSCRIPTION),
        (SizingRules(PROP), None, Reason.INVALID_SUBSCRIPTION),
        (SizingRules(PCT), D("100"), Reason.INVALID_SUBSCRIPTION),
        (SizingRules(PCT, percent_of_balance=D("2")), None, Reason.BALANCE_UNKNOWN),
        (SizingRules(PCT, percent_of_balance=D("2")), D("0"), Reason.SIZE_ZERO),
        # more than any real order (the leader's $100 × 10^27): skipped, never an exception for every follower
        (SizingRules(PROP, ratio=D("1e27")), None, Reason.SIZE_OUT_OF_RANGE),
        (SizingRules(PCT, percent_of_balance=D("100")), D("1e28"), Reason.SIZE_OUT_OF_RANGE),
    ],
)
def test_size_buy_cannot_size(rules: SizingRules, balance: Decimal | None, reason: Reason) -> None:
    result = size_buy(rules, trade(), balance, D(1))
    assert not isinstance(result, Sized)
    assert result[0] is reason and result[1]


def test_skip_detail_carries_the_numbers() -> None:
    result = size_buy(SizingRules(PCT, percent_of_balance=D("2")), trade(), D("0"), D(1))
    assert not isinstance(result, Sized)
    assert "$0" in result[1] and "2%" in result[1]


money = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)


@given(notional=money, ratio=st.decimals(min_value=D("0.0001"), max_value=D("10"), places=4),
       lo=money, hi=money, mult=st.decimals(min_value=D("0.1"), max_value=D("5"), places=2))
def test_clamped_amount_always_within_bounds(notional: Decimal, ratio: Decimal, lo: Decimal, hi: Decimal,
                                             mult: Decimal) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    rules = SizingRules(PROP, ratio=ratio, min_order_usd=lo, max_order_usd=hi)
    result = size_buy(rules, trade(notional_usd=notional), None, mult)
    assert isinstance(result, Sized)
    assert lo <= result.amount <= hi


@given(a=money, b=money, ratio=st.decimals(min_value=D("0.001"), max_value=D("2"), places=3))
def test_proportional_is_monotonic_in_leader_notional(a: Decimal, b: Decimal, ratio: Decimal) -> None:
    small, big = min(a, b), max(a, b)
    rules = SizingRules(PROP, ratio=ratio)
    r_small = size_buy(rules, trade(notional_usd=small), None, D(1))
    r_big = size_buy(rules, trade(notional_usd=big), None, D(1))
    assert isinstance(r_small, Sized) and isinstance(r_big, Sized)
    assert r_small.amount <= r_big.amount
