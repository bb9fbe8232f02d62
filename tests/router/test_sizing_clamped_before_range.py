"""A BUY sized above MAX_USD before its clamps is cut like any other: by maxOrderUsd, then the operator ceiling
(CONTROL_API.md: size by the mode, then clamp). Only what is still above MAX_USD after both is SIZE_OUT_OF_RANGE
(no real order is that big, and the reservations count it in micro-units)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.decide import decide
from services.router.domain.model import OrderIntent, Reason, SizingMode, SizingRules, Skip
from tests.router.factories import follower, market, policy, state, trade

D = Decimal
FIXED = SizingMode.FIXED_USD
PROP = SizingMode.PROPORTIONAL


@pytest.mark.parametrize(("sizing", "multiplier", "ceiling", "amount", "note"), [
    # ratio 5000 on a $250,000 leader fill: $1.25e9 before the clamp
    pytest.param(SizingRules(PROP, ratio=D("5000"), max_order_usd=D("250")), D(1), None, D("250"), "",
                 id="proportional cut to maxOrderUsd"),
    pytest.param(SizingRules(FIXED, fixed_usd=D("200000000"), max_order_usd=D("100")), D(10), None, D("100"), "",
                 id="fixed x multiplier cut to maxOrderUsd"),
    pytest.param(SizingRules(PROP, ratio=D("5000")), D(1), D("1000"), D("1000"),
                 "MAX_ORDER_USD: $1250000000 cut to the operator ceiling $1000", id="no maxOrderUsd: the ceiling cuts"),
    pytest.param(SizingRules(PROP, ratio=D("5000"), max_order_usd=D("250")), D(1), D("1000"), D("250"), "",
                 id="maxOrderUsd under the ceiling"),
])
def test_a_buy_sized_above_max_usd_is_cut_by_its_clamps(sizing: SizingRules, multiplier: Decimal,
                                                        ceiling: Decimal | None, amount: Decimal, note: str) -> None:
    d = decide(trade(price=D("0.5"), size=D("500000")), follower(sizing=sizing, multiplier=multiplier), market(),
               state(), D(0), policy(max_order_usd=ceiling))
    assert isinstance(d, OrderIntent), d
    assert d.amount_usd == amount and d.note == note


@pytest.mark.parametrize("ceiling", [None, D("2000000000")], ids=["no ceiling", "a ceiling above MAX_USD"])
def test_a_buy_still_above_max_usd_after_the_clamps_is_out_of_range(ceiling: Decimal | None) -> None:
    d = decide(trade(), follower(sizing=SizingRules(FIXED, fixed_usd=D("200000000")), multiplier=D(10)), market(),
               state(), D(0), policy(max_order_usd=ceiling))
    assert isinstance(d, Skip) and d.reason is Reason.SIZE_OUT_OF_RANGE
    assert "fixedUsd $200000000 × multiplier 10" in d.detail and "$2000000000" in d.detail
    assert d.detail.endswith("> $1000000000")


def test_a_zero_size_names_the_multiplier() -> None:
    d = decide(trade(), follower(multiplier=D(0)), market(), state(), D(0), policy())
    assert isinstance(d, Skip) and d.reason is Reason.SIZE_ZERO and "× multiplier 0" in d.detail
