"""SELL sizing from the leader's sold fraction and the follower's real position."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.router.domain.carry import InFlight
from services.router.domain.decide import route
from services.router.domain.model import Reason, Side, Skip
from services.router.domain.sells import leader_fraction, size_sell
from tests.router.factories import follower, market, policy, state, trade

D = Decimal


@pytest.mark.parametrize(
    ("before", "sold", "expected"),
    [(D("300"), D("100"), D("100") / D("300")), (D("200"), D("100"), D("0.5")), (D("100"), D("100"), D(1)),
     (D("100"), D("150"), D(1)), (None, D("10"), D(1)), (D(0), D("10"), D(1))],
)
def test_leader_fraction(before: Decimal | None, sold: Decimal, expected: Decimal) -> None:
    assert leader_fraction(before, sold) == expected


@pytest.mark.parametrize(
    ("held", "in_flight", "sold", "before", "min_size", "expected"),
    [
        ("100", "0", "50", "200", "5", D("25")),  # leader sold 25% -> follower sells 25%
        ("100", "0", "200", "200", "5", D("100")),  # leader closed -> sell everything
        ("714.2857", "0", "1", "1", "5", D("714.28")),  # never more than held: rounded down to 0.01
        ("33.333", "0", "1", "3", "5", D("11.11")),
        ("8", "0", "50", "100", "5", D("8")),  # 4 would leave 4 < min 5 unsellable: sell all
        ("100", "25", "50", "200", "5", D("18.75")),  # shares of an in-flight SELL are not sold twice
        ("100", "0", "1", "3", "0", D("33.33")),
    ],
)
def test_size_sell(held: str, in_flight: str, sold: str, before: Decimal | None, min_size: str,
                   expected: Decimal) -> None:
    result = size_sell(state(held_size=D(held), reserved_sell_size=D(in_flight)), D(sold),
                       D(before) if before is not None else None, D(min_size))
    assert result == expected


@pytest.mark.parametrize(
    ("held", "in_flight", "sold", "before", "min_size", "reason"),
    [
        ("0", "0", "10", "100", "5", Reason.NOTHING_HELD),
        ("10", "10", "10", "100", "5", Reason.NOTHING_HELD),  # all of it already being sold
        ("100", "0", "1", "100", "5", Reason.SELL_BELOW_MARKET_MINIMUM),  # 1 share < min 5, 99 remain
        ("3", "0", "100", "100", "5", Reason.SELL_BELOW_MARKET_MINIMUM),  # whole position below min
        ("0.004", "0", "1", "1", "0", Reason.SELL_BELOW_MARKET_MINIMUM),  # dust below the share step
        # the router never saw this leader buy: the follower's shares came from elsewhere (another leader)
        ("100", "0", "1", None, "5", Reason.LEADER_POSITION_UNKNOWN),
        ("100", "0", "500", None, "5", Reason.LEADER_POSITION_UNKNOWN),
        ("0", "0", "1", None, "5", Reason.NOTHING_HELD),
    ],
)
def test_size_sell_skips(held: str, in_flight: str, sold: str, before: str | None, min_size: str,
                         reason: Reason) -> None:
    result = size_sell(state(held_size=D(held), reserved_sell_size=D(in_flight)), D(sold),
                       D(before) if before is not None else None, D(min_size))
    assert isinstance(result, tuple) and result[0] is reason and result[1]


shares = st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=4)


@given(held=shares, in_flight=st.decimals(min_value=D(0), max_value=D("1000"), places=2), sold=shares,
       before=st.one_of(st.none(), shares), min_size=st.sampled_from([D(0), D(1), D(5), D(15)]))
def test_never_sells_more_than_held_nor_below_minimum(held: Decimal, in_flight: Decimal, sold: Decimal,
                                                      before: Decimal | None, min_size: Decimal) -> None:
    result = size_sell(state(held_size=held, reserved_sell_size=in_flight), sold, before, min_size)
    if isinstance(result, Decimal):
        assert D(0) < result <= held - in_flight
        assert result >= min_size
        assert result == result.quantize(D("0.01"))
        # what is left is either sellable later or nothing worth a share step
        left = held - in_flight - result
        assert left >= min_size or left < D("0.01")


def test_sells_of_a_position_never_seen_bought_stay_unknown_across_a_batch() -> None:
    """The first SELL is LEADER_POSITION_UNKNOWN; it must not leave a position of 0 behind, or the next SELL
    would look like the leader closing and sell the follower's whole position."""
    f = follower()
    st = {"w_1": state(held_size=D(100))}
    carry = InFlight()
    for lt in ("lt_s1", "lt_s2"):
        t = trade(id=lt, side=Side.SELL, size=D(1))
        [d] = route(t, [f], market(), st, carry.leader_before(t.wallet, t.asset_id, None), policy())
        assert isinstance(d, Skip) and d.reason is Reason.LEADER_POSITION_UNKNOWN
        carry.add(t, t.condition_id, [d], None)
