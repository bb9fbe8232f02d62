"""A SELL that closes a position realizes its proceeds less the cost the position still carries, to the last
fraction of a cent: over a position's life the realized PnL is what its SELLs brought less what its BUYs cost,
whatever the average price (kept to 8 decimals) rounds to, and a position held by one subscription books what a
split one books (pure, property based)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.decimals import ZERO
from services.executor.domain import subscription_shares as ss
from services.executor.domain.position_math import Position, apply_fill

D = Decimal


@pytest.mark.parametrize(("buys", "proceeds", "realized"), [
    # 30 shares for $10 (an average of 0.33333333...) sold for $10: nothing gained, nothing lost
    ([(D("30"), D("10"))], D("10"), D("0")),
    ([(D("30"), D("10")), (D("7"), D("2.87"))], D("12.87"), D("0")),
    ([(D("3"), D("1"))], D("1.5"), D("0.5")),
    ([(D("3"), D("2"))], D("1"), D("-1")),
])
def test_a_closing_sell_realizes_the_proceeds_less_the_cost(buys: list[tuple[Decimal, Decimal]], proceeds: Decimal,
                                                          realized: Decimal) -> None:
    pos = Position()
    for size, usd in buys:
        pos = apply_fill(pos, buying=True, size=size, price=usd / size, notional=usd).position
    e = apply_fill(pos, buying=False, size=pos.size, price=proceeds / pos.size, notional=proceeds)
    assert e.closed and e.position == Position(ZERO, ZERO, ZERO, realized)
    assert (e.realized_pnl_usd, e.exposure_delta_usd) == (realized, -pos.cost_usd)


cents = st.integers(1, 10**7).map(lambda n: D(n) / 100)
buys = st.lists(st.tuples(cents, st.integers(1, 99), st.integers(0, 50)), min_size=1, max_size=6)
sells = st.lists(st.integers(1, 99), max_size=5)  # percent of the holding each SELL before the close takes


@given(buys, sells, st.integers(1, 99), st.booleans())
def test_over_a_life_the_realized_pnl_is_proceeds_less_cost(
        bought: list[tuple[Decimal, int, int]], percents: list[int], close_price: int, oversold: bool) -> None:
    pos, cost, proceeds, realized = Position(), ZERO, ZERO, ZERO
    for size, price, fee_bps in bought:
        usd = size * D(price) / 100
        e = apply_fill(pos, buying=True, size=size, price=D(price) / 100, fee_shares=size * fee_bps / 10_000,
                       notional=usd)
        pos, cost = e.position, cost + usd
    for pct in percents:
        size = (pos.size * pct / 100).quantize(D("0.01"))
        if not 0 < size < pos.size:
            continue
        usd = size * D(pct) / 100
        e = apply_fill(pos, buying=False, size=size, price=D(pct) / 100, notional=usd)
        pos, proceeds, realized = e.position, proceeds + usd, realized + e.realized_pnl_usd
        assert pos.cost_usd >= 0
    size = pos.size + (D("1") if oversold else ZERO)  # a SELL reported beyond the holding realizes the held part
    usd = size * D(close_price) / 100
    e = apply_fill(pos, buying=False, size=size, price=D(close_price) / 100, notional=usd)
    proceeds += usd * pos.size / size
    realized += e.realized_pnl_usd
    assert e.closed and e.position.size == 0 and e.position.cost_usd == 0
    assert realized == e.position.realized_pnl_usd == proceeds - cost


@given(buys, st.integers(1, 99))
def test_one_subscription_closing_books_what_a_split_position_books(bought: list[tuple[Decimal, int, int]],
                                                                     close_price: int) -> None:
    """The part of a split position that closes frees its cost exactly (``subscription_shares.sell``); a position
    held by one part is booked as ``apply_fill`` books it: the two agree."""
    pos = Position()
    for size, price, fee_bps in bought:
        pos = apply_fill(pos, buying=True, size=size, price=D(price) / 100, fee_shares=size * fee_bps / 10_000,
                         notional=size * D(price) / 100).position
    usd = pos.size * D(close_price) / 100
    alone = apply_fill(pos, buying=False, size=pos.size, price=D(close_price) / 100, notional=usd)
    effect, _, charges = ss.sell({"sub_A": ss.Part(pos.size, pos.cost_usd)}, "sub_A", alone, pos, pos.size, usd)
    (charge,) = charges
    assert charge.realized_pnl_usd == effect.realized_pnl_usd == usd - pos.cost_usd
    assert charge.exposure_delta_usd == -pos.cost_usd
