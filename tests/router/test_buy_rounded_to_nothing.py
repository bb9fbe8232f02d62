"""A BUY copy that rounds down to $0.00 is a skip, never an order, even where the market minimum is $0 (a market
whose info names no minimum size, ``TT_ROUTER_MARKETABLE_BUY_MIN_USD=0``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.router.domain.decide import decide
from services.router.domain.model import FollowerState, OrderIntent, Reason, RiskRules, SizingMode, SizingRules, Skip
from tests.router.factories import follower, market, policy, state, trade

D = Decimal
FIXED = SizingMode.FIXED_USD
NO_MINIMUM = market(min_order_size=D("0"))


@pytest.mark.parametrize(
    ("sizing", "risk", "st_", "ceiling", "reason"),
    [
        # $0.004 asked: $0.00 once rounded down to the cent
        (SizingRules(FIXED, fixed_usd=D("0.004")), RiskRules(), state(), None, Reason.SIZE_ZERO),
        # $0.004 of market headroom left ($500 - $499.996)
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(max_market_exposure_usd=D("500")),
         state(market_exposure_usd=D("499.996")), None, Reason.MARKET_EXPOSURE_LIMIT),
        # $0.009 of total headroom left, in flight counted
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(max_total_exposure_usd=D("100")),
         state(total_exposure_usd=D("90"), reserved_total_usd=D("9.991")), None, Reason.TOTAL_EXPOSURE_LIMIT),
        # an operator ceiling of $0.005
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(), state(), D("0.005"), Reason.MAX_ORDER_USD),
    ],
)
def test_a_buy_rounded_down_to_nothing_is_skipped(sizing: SizingRules, risk: RiskRules, st_: FollowerState,
                                                  ceiling: Decimal | None, reason: Reason) -> None:
    d = decide(trade(), follower(sizing=sizing, risk=risk), NO_MINIMUM, st_, None,
               policy(marketable_buy_min_usd=D("0"), max_order_usd=ceiling))
    assert isinstance(d, Skip), d
    assert d.reason is reason and "$0" in d.detail


def test_a_buy_the_ceiling_leaves_below_the_market_minimum_names_the_ceiling() -> None:
    """As a SELL's: the cut is why it was not sent ($1.50 < 5 shares × 0.40 + 2 % = $2.04)."""
    d = decide(trade(), follower(), market(), state(), None, policy(max_order_usd=D("1.5")))
    assert isinstance(d, Skip) and d.reason is Reason.MAX_ORDER_USD
    assert d.detail == ("MAX_ORDER_USD: $25 cut to the operator ceiling $1.5, below the market minimum $2.04")


cents = st.decimals(min_value=D("0"), max_value=D("50"), places=3)


@settings(max_examples=300, deadline=None)
@given(fixed=st.decimals(min_value=D("0.001"), max_value=D("50"), places=3), cap=st.one_of(st.none(), cents),
       exposure=cents, marketable=st.sampled_from([D("0"), D("0.001"), D("1")]),
       min_size=st.sampled_from([D("0"), D("5")]))
def test_a_buy_order_always_spends_a_cent_or_more(fixed: Decimal, cap: Decimal | None, exposure: Decimal,
                                                   marketable: Decimal, min_size: Decimal) -> None:
    d = decide(trade(), follower(sizing=SizingRules(FIXED, fixed_usd=fixed),
                                 risk=RiskRules(max_market_exposure_usd=cap)),
               market(min_order_size=min_size), state(market_exposure_usd=exposure), None,
               policy(marketable_buy_min_usd=marketable))
    if isinstance(d, OrderIntent):
        assert d.amount_usd is not None and d.amount_usd >= D("0.01")
    else:
        assert d.reason.value.isupper()
