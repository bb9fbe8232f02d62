"""A copy BUY must hold at least the market minimum once the venue took its taker fee in shares, or its exit can
never be posted (SELL_BELOW_MARKET_MINIMUM until the market resolves)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.takerfee import TakerFee
from services.router.domain.market_rules import buy_minimum_usd
from services.router.domain.model import SHARE_QUANTUM, Reason
from services.router.domain.sizing import NetMinimum, below_net_minimum, gross_for_net, net_buy_minimum

D = Decimal
BASE = TakerFee(D("0.1"), D(1))  # taker_base_fee 1000 bps on the p(1 - p) curve
SPORTS = TakerFee(D("0.05"), D(1))  # Gamma's sports_fees_v3 schedule
CRYPTO = TakerFee(D("0.25"), D(2))


def net(gross: Decimal, price: Decimal, fee: TakerFee | None) -> Decimal:
    return gross - (fee.shares(gross, price) if fee else D(0))


def test_a_minimum_copy_ends_below_the_minimum_today() -> None:
    """The defect: the fee-blind minimum at 0.51 buys exactly 5 shares, of which 4.75 are left after the fee."""
    usd = buy_minimum_usd(D("0.50"), D(5), D(1), 200)
    assert usd == D("2.55")
    assert net(usd / D("0.51"), D("0.51"), BASE) < 5


@pytest.mark.parametrize(
    ("price", "fee", "gross", "fee_shares"),
    [
        # 0.1 × 0.51 × 0.49 / 0.51 = 0.049 fee shares per share: 5.26 − 0.25774 = 5.00226 (5.25 leaves 4.99275)
        (D("0.51"), BASE, D("5.26"), D("0.25774")),
        (D("0.51"), SPORTS, D("5.13"), D("0.125685")),
        (D("0.5"), CRYPTO, D("5.17"), D("0.161563")),  # 0.25 × 0.25² / 0.5 = 0.03125 a share
        (D("0.05"), BASE, D("5.53"), D("0.52535")),
        (D("0.99"), BASE, D("5.01"), D("0.005010")),
        (D("1"), BASE, D("5"), D(0)),  # nothing to win at 1: no fee
        (D("0.51"), TakerFee(D(0), D(1)), D("5"), D(0)),
        (D("0.51"), None, D("5"), D(0)),
        (D("0.51"), TakerFee(D("0.05"), D("0.5")), D("5.26"), D("0.257792")),
    ],
)
def test_gross_for_net(price: Decimal, fee: TakerFee | None, gross: Decimal, fee_shares: Decimal) -> None:
    assert gross_for_net(D(5), price, fee) == gross
    assert (fee.shares(gross, price) if fee else D(0)) == fee_shares
    assert net(gross, price, fee) >= 5 > net(gross - SHARE_QUANTUM, price, fee)


def test_no_size_reaches_a_minimum_the_fee_eats() -> None:
    assert gross_for_net(D(5), D("0.01"), TakerFee(D("0.9"), D(0))) is None


@pytest.mark.parametrize(
    ("price", "bps", "fee", "usd", "gross"),
    [
        (D("0.50"), 200, BASE, D("2.69"), D("5.26")),  # 5.26 × 0.51 = 2.6826, rounded up to the cent
        (D("0.50"), 200, SPORTS, D("2.62"), D("5.13")),
        (D("0.50"), 0, BASE, D("2.64"), D("5.27")),  # 0.1 × 0.5 × 0.5 / 0.5 = 0.05 a share: 5 / 0.95 = 5.2632
        (D("0.10"), 200, BASE, D("1"), D("5.50")),  # the $1 marketable minimum is the larger
        (D("0.50"), 200, None, D("2.55"), D(5)),  # no fee known: today's minimum
        (D("0.50"), 200, TakerFee(D(0), D(1)), D("2.55"), D(5)),
        (D("0.99"), 200, BASE, D(5), D("5.01")),  # the limit stops at 1 − tick (0.99), where the fee counts
    ],
)
def test_net_buy_minimum(price: Decimal, bps: int, fee: TakerFee | None, usd: Decimal, gross: Decimal) -> None:
    m = net_buy_minimum(price, D(5), D(1), bps, fee)
    assert m is not None and (m.usd, m.shares) == (usd, gross)
    assert m.usd >= buy_minimum_usd(price, D(5), D(1), bps)


def test_unknown_or_unusable_inputs_keep_todays_minimum() -> None:
    for minimum in (D(0), D(-1)):
        m = net_buy_minimum(D("0.5"), minimum, D(1), 200, BASE)
        assert m is not None and m.usd == buy_minimum_usd(D("0.5"), minimum, D(1), 200)
    m = net_buy_minimum(D(0), D(5), D(1), 200, BASE)
    assert m is not None and m.usd == buy_minimum_usd(D(0), D(5), D(1), 200)


MIN = NetMinimum(usd=D("2.69"), shares=D("5.26"), fee_shares=D("0.25774"), price=D("0.51"), min_order_size=D(5))


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (D("2.69"), None),  # holds the minimum once the fee is taken
        (D("3"), None),
        (D("2.68"), Reason.BELOW_MARKET_MINIMUM),
        (D("2.55"), Reason.BELOW_MARKET_MINIMUM),  # the fee-blind minimum: 4.755 shares once the fee is taken
    ],
)
def test_below_net_minimum(amount: Decimal, expected: Reason | None) -> None:
    got = below_net_minimum(amount, MIN)
    assert (got[0] if got is not None else None) is expected


def test_unreachable_minimum_is_below_minimum() -> None:
    got = below_net_minimum(D(50), None)
    assert got is not None and got[0] is Reason.BELOW_MARKET_MINIMUM


prices = st.integers(min_value=1, max_value=999).map(lambda n: D(n) / 1000)
fees = st.builds(TakerFee, st.sampled_from([D("0.001"), D("0.0175"), D("0.05"), D("0.07"), D("0.1"), D("0.25")]),
                 st.sampled_from([D(0), D("0.5"), D(1), D("1.5"), D(2), D(3)]))
minimums = st.sampled_from([D(1), D(5), D(15), D("5.5"), D(100)])


@settings(max_examples=300, deadline=None)
@given(price=prices, fee=fees, minimum=minimums)
def test_gross_is_the_smallest_size_netting_the_minimum(price: Decimal, fee: TakerFee, minimum: Decimal) -> None:
    gross = gross_for_net(minimum, price, fee)
    if gross is None:  # only when the fee takes every share bought
        assert fee.shares(D(1000), price) >= D(1000) * D("0.99")
        return
    assert gross == gross.quantize(SHARE_QUANTUM)
    assert net(gross, price, fee) >= minimum
    assert net(gross - SHARE_QUANTUM, price, fee) < minimum


@settings(max_examples=300, deadline=None)
@given(price=prices, bps=st.sampled_from([0, 50, 200, 1000]), fee=fees, minimum=minimums,
       better=st.integers(min_value=0, max_value=50))
def test_the_minimum_usd_nets_the_minimum_at_any_fill_price_within_the_limit(
        price: Decimal, bps: int, fee: TakerFee, minimum: Decimal, better: int) -> None:
    """The venue buys ``usd / limit`` shares (rounded down to the share step) at worst; a fill at a better price buys
    more shares, and (for the venue's rates) more net of the fee too."""
    m = net_buy_minimum(price, minimum, D(1), bps, fee)
    if m is None:
        return
    limit = m.price
    shares = (m.usd / limit).quantize(SHARE_QUANTUM, rounding="ROUND_DOWN")
    assert shares >= m.shares and net(shares, limit, fee) >= minimum
    fill = limit - D(better) / 1000
    if fill > 0 and fee.rate <= D("0.25") and fee.exponent >= 1:
        at_fill = (m.usd / fill).quantize(SHARE_QUANTUM, rounding="ROUND_DOWN")
        assert net(at_fill, fill, fee) >= minimum
