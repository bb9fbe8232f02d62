"""The operator ceiling per order (TT_MAX_ORDER_USD) in the router's decisions: copies are cut to it, the cut
noted on the order; a SELL counts as its size × the leader's price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common import ceiling
from services.router.domain.decide import decide
from services.router.domain.model import OrderIntent, Reason, RiskRules, Side, SizingMode, SizingRules, Skip
from tests.router.factories import follower, market, policy, state, trade

D = Decimal
FIXED = SizingMode.FIXED_USD
PROP = SizingMode.PROPORTIONAL


@pytest.mark.parametrize(("sizing", "risk", "cap", "amount", "noted"), [
    (SizingRules(FIXED, fixed_usd=D("2500")), RiskRules(), D("1000"), D("1000"), True),
    (SizingRules(PROP, ratio=D("50")), RiskRules(), D("1000"), D("1000"), True),  # leader $100 × 50
    (SizingRules(FIXED, fixed_usd=D("1000")), RiskRules(), D("1000"), D("1000"), False),  # at the ceiling: kept
    (SizingRules(FIXED, fixed_usd=D("999.99")), RiskRules(), D("1000"), D("999.99"), False),
    (SizingRules(FIXED, fixed_usd=D("25"), min_order_usd=D("2000")), RiskRules(), D("1000"), D("1000"), True),
    (SizingRules(FIXED, fixed_usd=D("2500")), RiskRules(), None, D("2500"), False),  # no ceiling
    # cut to the ceiling, then to the exposure headroom: the cap that set the amount is the exposure
    (SizingRules(FIXED, fixed_usd=D("2500")), RiskRules(max_total_exposure_usd=D("300")), D("1000"), D("300"),
     False),
])
def test_a_buy_copy_above_the_ceiling_is_cut_to_it(sizing: SizingRules, risk: RiskRules, cap: Decimal | None,
                                                  amount: Decimal, noted: bool) -> None:
    d = decide(trade(), follower(sizing=sizing, risk=risk), market(), state(), None, policy(max_order_usd=cap))
    assert isinstance(d, OrderIntent) and d.side is Side.BUY and d.amount_usd == amount
    assert d.note.startswith("MAX_ORDER_USD: $") is noted
    if noted:
        assert d.note.endswith("cut to the operator ceiling $1000")


def test_a_sell_copy_worth_more_than_the_ceiling_is_cut_to_the_shares_it_sells() -> None:
    tr = trade(side=Side.SELL, price=D("0.40"), size=D("5000"))
    d = decide(tr, follower(), market(), state(held_size=D("10000")), D("5000"), policy(max_order_usd=D("1000")))
    assert isinstance(d, OrderIntent) and d.side is Side.SELL
    assert d.size == D("2500")  # $1000 / 0.40
    assert d.note == ("MAX_ORDER_USD: 10000 shares × $0.4 = $4000 cut to 2500 shares by the operator ceiling $1000")
    kept = decide(tr, follower(), market(), state(held_size=D("2000")), D("5000"), policy(max_order_usd=D("1000")))
    assert isinstance(kept, OrderIntent) and kept.size == D("2000") and kept.note == ""  # $800: kept


def test_a_sell_the_ceiling_leaves_below_the_market_minimum_is_skipped() -> None:
    tr = trade(side=Side.SELL, price=D("0.40"), size=D("100"))
    d = decide(tr, follower(), market(min_order_size=D("5")), state(held_size=D("100")), D("100"),
               policy(max_order_usd=D("1.5")))
    assert isinstance(d, Skip) and d.reason is Reason.MAX_ORDER_USD and "below the market minimum 5" in d.detail


@pytest.mark.parametrize(("amount", "cap", "want"), [
    (D("5"), D("1"), (D("1"), True)), (D("1"), D("1"), (D("1"), False)), (D("0.5"), D("1"), (D("0.5"), False)),
    (D("5"), None, (D("5"), False)),
])
def test_cap_buy(amount: Decimal, cap: Decimal | None, want: tuple[Decimal, bool]) -> None:
    got, note = ceiling.cap_buy(amount, cap)
    assert (got, bool(note)) == want


@pytest.mark.parametrize(("size", "price", "cap", "want"), [
    (D("100"), D("0.5"), D("10"), D("20")), (D("100"), D("0.3"), D("10"), D("33.33")),
    (D("20"), D("0.5"), D("10"), D("20")), (D("100"), D("0"), D("10"), D("100")), (D("100"), D("0.5"), None, D("100")),
])
def test_cap_sell(size: Decimal, price: Decimal, cap: Decimal | None, want: Decimal) -> None:
    got, note = ceiling.cap_sell(size, price, cap)
    assert got == want and bool(note) is (got != size)
    assert got * price <= cap if cap is not None and note else True


@pytest.mark.parametrize(("worth", "cap", "refused"), [
    (D("1000"), D("1000"), False), (D("1000.01"), D("1000"), True), (D("5"), None, False)])
def test_above_ceiling(worth: Decimal, cap: Decimal | None, refused: bool) -> None:
    got = ceiling.above_ceiling(worth, cap, "x")
    assert (got is not None) is refused
    if got is not None:
        assert got[0] == "MAX_ORDER_USD_EXCEEDED" and "TT_MAX_ORDER_USD $1000" in got[1]
