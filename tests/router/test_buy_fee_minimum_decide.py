"""A copied BUY in a fee-paying market holds the market minimum once the venue took its fee in shares, or is not sent
(the exit of a copy holding fewer could never be posted: SELL_BELOW_MARKET_MINIMUM until the market resolves)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.marketstate import MarketInfo
from common.takerfee import TakerFee
from services.router.domain.decide import decide
from services.router.domain.model import OrderIntent, Reason, RiskRules, SizingMode, SizingRules, Skip
from services.router.read_model import market_rules
from tests.router.factories import follower, market, policy, state, trade

D = Decimal
BASE = TakerFee(D("0.1"), D(1))  # taker_base_fee 1000
FIXED = SizingMode.FIXED_USD


@pytest.mark.parametrize(
    ("usd", "fee", "sizing_cap", "ceiling", "risk", "expected"),
    [
        # leader 0.50, 2 % slippage: worst 0.51. $2.55 buys 5 shares there, 4.755 once the fee (0.049 a share) is
        # taken: below the minimum, skipped as the contract has a BUY below the market's minimum (spending more than
        # fixedUsd is not the subscription's sizing); $2.69 (5.26 shares, 5.00226 net) holds it
        (D("2.55"), BASE, None, None, RiskRules(), Reason.BELOW_MARKET_MINIMUM),
        (D("2.68"), BASE, None, None, RiskRules(), Reason.BELOW_MARKET_MINIMUM),
        (D("2.69"), BASE, None, None, RiskRules(), D("2.69")),
        (D("2.61"), TakerFee(D("0.05"), D(1)), None, None, RiskRules(), Reason.BELOW_MARKET_MINIMUM),
        (D("2.62"), TakerFee(D("0.05"), D(1)), None, None, RiskRules(), D("2.62")),
        (D("3"), BASE, None, None, RiskRules(), D("3")),  # enough already
        (D("2.55"), None, None, None, RiskRules(), D("2.55")),  # no fee known: as before
        (D("2.55"), TakerFee(D(0), D(1)), None, None, RiskRules(), D("2.55")),
        # what cut it below the fee's minimum is why: the sizing's clamp is its size, the ceiling and a risk cap
        # their reasons (as below the fee-blind minimum)
        (D("3"), BASE, D("2.60"), None, RiskRules(), Reason.BELOW_MARKET_MINIMUM),
        (D("3"), BASE, None, D("2.60"), RiskRules(), Reason.MAX_ORDER_USD),
        (D("3"), BASE, None, None, RiskRules(max_total_exposure_usd=D("2.60")), Reason.TOTAL_EXPOSURE_LIMIT),
        (D("3"), BASE, None, None, RiskRules(max_total_exposure_usd=D("2.69")), D("2.69")),
        # below the fee-blind minimum: skipped as before
        (D("2.54"), BASE, None, None, RiskRules(), Reason.BELOW_MARKET_MINIMUM),
    ],
)
def test_copy_buy_holds_the_minimum_net_of_the_fee(usd: Decimal, fee: TakerFee | None, sizing_cap: Decimal | None,
                                                   ceiling: Decimal | None, risk: RiskRules,
                                                   expected: Decimal | Reason) -> None:
    f = follower(sizing=SizingRules(FIXED, fixed_usd=usd, max_order_usd=sizing_cap), risk=risk)
    d = decide(trade(price=D("0.50")), f, market(taker_fee=fee), state(), None, policy(max_order_usd=ceiling))
    if isinstance(expected, Reason):
        assert isinstance(d, Skip) and d.reason is expected
    else:
        assert isinstance(d, OrderIntent) and d.amount_usd == expected


def test_market_rules_carry_the_fee() -> None:
    info = MarketInfo("a", "c", D("0.01"), D(5), taker_fee=BASE)
    rules = market_rules(info)
    assert rules is not None and rules.taker_fee == BASE
