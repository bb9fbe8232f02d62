"""SELL sizing from the leader's sold fraction and the follower's real position."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.reservations import NOTHING_RESERVED, from_micro
from services.router.domain.carry import InFlight
from services.router.domain.decide import route
from services.router.domain.model import Reason, Side, Skip
from services.router.domain.sells import AfterBuy, leader_fraction, size_sell
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


@pytest.mark.parametrize(
    ("held", "in_flight", "buying_usd", "sold", "before", "expected"),
    [
        # the leader bought and sold before the copy BUY was answered: sold later, as the leader's fraction
        ("0", "0", "25", "100", "100", AfterBuy(D(1))),
        ("0", "0", "25", "50", "200", AfterBuy(D("0.25"))),
        ("10", "10", "25", "50", "100", AfterBuy(D("0.5"))),  # what is held is already being sold
        # nothing in flight, or a leader never seen buying: skipped as before
        ("0", "0", "0", "100", "100", (Reason.NOTHING_HELD,)),
        ("0", "0", "25", "100", None, (Reason.NOTHING_HELD,)),
        # shares held too: the BUY's shares count as well, so the SELL waits for its answer
        ("100", "0", "25", "50", "200", AfterBuy(D("0.25"))),
        ("100", "0", "0", "50", "200", D(25)),  # no BUY in flight: sized now
    ],
)
def test_a_sell_while_the_copy_buy_is_in_flight(held: str, in_flight: str, buying_usd: str, sold: str,
                                               before: str | None, expected: object) -> None:
    result = size_sell(state(held_size=D(held), reserved_sell_size=D(in_flight), reserved_market_usd=D(buying_usd)),
                       D(sold), D(before) if before is not None else None, D(5))
    if isinstance(expected, tuple):
        assert isinstance(result, tuple) and result[0] is expected[0]
    else:
        assert result == expected


def test_a_fast_flip_in_one_batch_sells_after_the_buy() -> None:
    """BUY then SELL of the same leader in one batch: the SELL sees the BUY's reservation (the carry) and goes
    out as the leader's fraction, for the executor to size once the BUY is answered."""
    f = follower()
    carry = InFlight()
    buy = trade(id="lt_b", side=Side.BUY, size=D(100))
    [b] = route(buy, [f], market(), {}, carry.leader_before(buy.wallet, buy.asset_id, None), policy())
    assert not isinstance(b, Skip)
    carry.add(buy, buy.condition_id, [b], None)
    sell = trade(id="lt_s", side=Side.SELL, size=D(100))
    reserved = carry.reserved("w_1", sell.condition_id, sell.asset_id, NOTHING_RESERVED)
    states = {"w_1": state(reserved_market_usd=from_micro(reserved.market_usd_micro))}
    [s] = route(sell, [f], market(), states, carry.leader_before(sell.wallet, sell.asset_id, None), policy())
    assert not isinstance(s, Skip) and s.side is Side.SELL and s.size is None and s.sell_fraction == D(1)


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
