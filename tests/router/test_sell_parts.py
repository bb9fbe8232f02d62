"""A copied SELL is sized on its own subscription's part of the wallet's position when a split is kept (pure).

One wallet follows leader A (sub_A) and leader B (sub_B); both bought the same token: sub_A 100 shares, sub_B 50.
Leader A closing sells sub_A's 100, never sub_B's 50 (leader B still holds). A position whose split is NULL (one
subscription, or none, bought it) or does not add up is sized on the wallet's shares for every subscription of the
wallet, as before splits: its opener, another subscription, one re-created after its opener was stopped.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.carry import InFlight
from services.router.domain.decide import route
from services.router.domain.holdings import parts_of
from services.router.domain.model import OrderIntent, Reason, Side, Skip
from services.router.domain.sells import size_sell
from services.router.read_model import selling_by
from tests.router.factories import follower, market, policy, state, trade

D = Decimal
SPLIT = {"sub_A": D(100), "sub_B": D(50)}
THREE = {"sub_A": D(100), "sub_B": D(50), "sub_C": D(50)}
RESIDUE = {"sub_A": D("0.00666667"), "sub_B": D("33.33333333")}  # a manual SELL of 50, then sub_A's close of 66.66
PROBE = {"sub_A": D("0.005"), "sub_B": D("49.7475"), "sub_C": D("0.0075")}


@pytest.mark.parametrize(("kept", "size", "cost", "expected"), [
    (None, "150", "70", None),  # none kept: sized on the wallet's shares
    ({}, "150", "70", None),
    ({"sub_A": ["100", "40"], "sub_B": ["50", "30"]}, "150", "70", SPLIT),
    ({"sub_A": ["100", "40"], "": ["50", "30"]}, "150", "70", {"sub_A": D(100), "": D(50)}),  # manual shares
    ({"sub_B": ["150", "70"]}, "150", "70", {"sub_B": D(150)}),  # its opener sold its part: sub_B's alone
    ({"sub_A": ["100", "40"], "sub_B": ["50", "30"]}, "160", "70", None),  # booked since by an older executor
    ({"sub_A": ["100", "40"], "sub_B": ["50", "30"]}, "150", "75", None),  # its cost does not add up either
])
def test_parts_of(kept: dict[str, list[str]] | None, size: str, cost: str,
                  expected: dict[str, Decimal] | None) -> None:
    assert parts_of(kept, D(size), D(cost)) == expected


# (held, parts, in flight, of it by subscription, subscription, leader sold of 100, shares sold or a reason)
CASES = [
    # the defect: leader A closes, sub_A sells its 100 (the wallet's 150 before)
    ("150", SPLIT, "0", None, "sub_A", "100", D(100)),
    ("150", SPLIT, "0", None, "sub_A", "50", D(50)),  # half of its own 100, not of 150
    ("150", SPLIT, "0", None, "sub_B", "100", D(50)),
    ("150", {"sub_A": D(100), "": D(50)}, "0", None, "sub_A", "100", D(100)),  # manual shares stay
    # a split kept, the subscription has no part in it: the wallet's shares are other subscriptions'
    ("150", SPLIT, "0", None, "sub_C", "100", Reason.NOTHING_HELD),
    ("150", {"sub_B": D(150)}, "0", None, "sub_A", "100", Reason.NOTHING_HELD),  # its opener sold out
    ("150", {"sub_A": D(100), "": D(50)}, "0", None, "sub_B", "100", Reason.NOTHING_HELD),
    # no split kept (NULL, almost every position): the wallet's shares, for EVERY subscription of the wallet
    ("150", None, "0", None, "sub_A", "100", D(150)),  # its opener
    ("150", None, "0", None, "sub_A", "50", D(75)),
    ("150", None, "0", None, "sub_B", "100", D(150)),  # another subscription (its own copy was skipped)
    ("150", None, "0", None, "sub_A2", "100", D(150)),  # re-created after its opener sub_A was stopped
    ("150", None, "0", None, "sub_A2", "50", D(75)),
    ("150", None, "40", None, "sub_B", "100", D(110)),  # less what the wallet's SELLs in flight may sell
    ("150", None, "40", {"sub_A": D(40)}, "sub_B", "100", D(110)),  # whoever's they are
    ("150", None, "150", None, "sub_B", "100", Reason.NOTHING_HELD),
    # a split kept, SELLs in flight: its own copies' come off its part, other subscriptions' copies do not
    ("150", SPLIT, "50", {"sub_A": D(50)}, "sub_A", "100", D(50)),
    ("150", SPLIT, "25", {"sub_B": D(25)}, "sub_A", "100", D(100)),
    ("150", SPLIT, "75", {"sub_A": D(50), "sub_B": D(25)}, "sub_B", "100", D(25)),
    ("150", SPLIT, "50", {"sub_A": D(50)}, "sub_A", "50", D(25)),  # half of what its part still holds
    # a SELL in flight not known by subscription (an exit, a manual SELL, a SELL index entry from before the
    # upgrade) may take its shares: held back from every part
    ("150", SPLIT, "75", None, "sub_A", "100", D(25)),
    ("150", SPLIT, "75", None, "sub_B", "100", Reason.NOTHING_HELD),
    ("150", SPLIT, "60", {"sub_B": D(20)}, "sub_A", "100", D(60)),  # 20 sub_B's, 40 unknown
    ("150", SPLIT, "30", {"sub_B": D(20)}, "sub_B", "100", D(20)),  # its own 20 and the unknown 10
    # never more than the wallet's shares not being sold
    ("150", SPLIT, "130", {"sub_B": D(50)}, "sub_A", "100", D(20)),
    ("150", SPLIT, "150", {"sub_B": D(50)}, "sub_A", "100", Reason.NOTHING_HELD),
    ("150", SPLIT, "40", {"sub_B": D(60)}, "sub_A", "100", D(100)),  # more listed than reserved: never above its part
    # its remainder below the market minimum (5) is sold too: its own, not the wallet's
    ("108", {"sub_A": D(8), "sub_B": D(100)}, "0", None, "sub_A", "50", D(8)),
    ("108", {"sub_A": D(100), "sub_B": D(8)}, "0", None, "sub_A", "1", Reason.SELL_BELOW_MARKET_MINIMUM),
    # a part below the share step (what a proportional take leaves) counts as none
    ("150.005", {"sub_A": D("0.005"), "sub_B": D(150)}, "0", None, "sub_A", "100", Reason.NOTHING_HELD),
]


# spills and leftovers (columns as CASES)
SPILL_CASES = [
    # another subscription's SELL copy in flight: set aside up to its own part, what it sells beyond it is not
    ("200", THREE, "80", {"sub_A": D(80)}, "sub_B", "100", D(50)),
    ("200", THREE, "100", {"sub_A": D(100)}, "sub_B", "100", D(50)),
    ("200", THREE, "120", {"sub_A": D(120)}, "sub_B", "100", D(30)),  # its 20 beyond may all come off sub_B
    ("200", THREE, "120", {"sub_A": D(120)}, "sub_C", "100", D(30)),
    ("200", THREE, "70", {"sub_C": D(70)}, "sub_B", "100", D(30)),
    ("200", THREE, "120", {"sub_A": D(120)}, "sub_B", "50", D(15)),  # half of what its part surely keeps
    ("150", {"sub_A": D(100), "sub_C": D(50)}, "100", {"sub_B": D(100)}, "sub_C", "100",
     Reason.NOTHING_HELD),  # sub_B has no part: all 100 it sells are sub_A's and sub_C's
    ("200", THREE, "40", None, "sub_B", "100", D(10)),  # not known by subscription: held back from every part
    # the other parts keep only sub-cent leftovers: they go with the copy
    ("33.34", RESIDUE, "0", None, "sub_B", "100", D("33.34")),
    ("33.34", RESIDUE, "0", None, "sub_B", "50", D("16.67")),  # half of the wallet's 33.34
    ("33.34", RESIDUE, "0", None, "sub_A", "100", Reason.NOTHING_HELD),  # its part is itself a leftover
    ("50.01", {"sub_A": D("0.004"), "": D("0.005"), "sub_B": D("50.001")}, "0", None, "sub_B", "100", D("50.01")),
    ("50.01", {"sub_A": D("0.005"), "": D("0.005"), "sub_B": D(50)}, "0", None, "sub_B", "100",
     D("50.01")),  # a step in all, but no part's: each is dust
    # each other part below a step (sub_A 100, sub_B 50, sub_C 50, a manual SELL of 1.01, then leaders A and C
    # closed): sized on its 49.7475, sub_B's close sold 49.74 and left 0.02 held for ever, no copy able to sell it
    ("49.76", PROBE, "0", None, "sub_B", "100", D("49.76")),
    ("49.76", PROBE, "0", None, "sub_B", "50", D("24.88")),  # half of the wallet's 49.76
    ("49.76", PROBE, "10", None, "sub_B", "100", D("39.76")),  # an exit in flight: all it does not sell
    ("49.76", PROBE, "0", None, "sub_C", "100", Reason.NOTHING_HELD),  # its part is itself a leftover
    ("50", {"sub_A": D("0.009"), "sub_B": D("49.982"), "sub_C": D("0.009")}, "0", None, "sub_B", "100", D(50)),
    ("50", {"sub_A": D("0.009"), "sub_B": D("49.981"), "sub_C": D("0.01")}, "0", None, "sub_B", "100",
     D("49.98")),  # sub_C's step is a holding: its own copy's to sell
    ("60.005", {"sub_A": D(10), "sub_B": D("50.005")}, "9.995", {"sub_A": D("9.995")}, "sub_B", "100",
     D("50.01")),  # sub_A's copy in flight leaves 0.005 of its part
    ("60", {"sub_A": D(10), "sub_B": D(50)}, "9.995", None, "sub_B", "100", D(40)),  # might take sub_B's: kept
]


@pytest.mark.parametrize(("held", "parts", "in_flight", "by_sub", "sub", "sold", "expected"), CASES + SPILL_CASES)
def test_a_copied_sell_is_sized_on_its_subscriptions_part(
        held: str, parts: dict[str, Decimal] | None, in_flight: str, by_sub: dict[str, Decimal] | None, sub: str,
        sold: str, expected: Decimal | Reason) -> None:
    st = state(held_size=D(held), held_parts=parts, reserved_sell_size=D(in_flight), selling_by=by_sub)
    got = size_sell(st, D(sold), D(100), D(5), sub)
    if isinstance(expected, Reason):
        assert isinstance(got, tuple) and got[0] is expected and got[1], got
    else:
        assert got == expected


@pytest.mark.parametrize(("parts", "in_flight", "sub", "detail"), [
    (SPLIT, "0", "sub_C",
     "subscription holds none of the follower's 150 shares: they belong to other subscriptions of the wallet"),
    ({"sub_A": D("0.005"), "sub_B": D(150)}, "0", "sub_A",
     "subscription holds none of the follower's 150.005 shares: they belong to other subscriptions of the wallet"),
    (SPLIT, "100", "sub_A", "subscription holds 100 of the follower's 150 shares (100 already being sold)"),
    (None, "150", "sub_C", "follower holds 150 shares (150 already being sold)"),
])
def test_the_skip_says_whose_shares_they_are(parts: dict[str, Decimal] | None, in_flight: str, sub: str,
                                             detail: str) -> None:
    held = sum(parts.values(), D(0)) if parts else D(150)
    got = size_sell(state(held_size=held, held_parts=parts, reserved_sell_size=D(in_flight)), D(10), D(100), D(5),
                    sub)
    assert got == (Reason.NOTHING_HELD, detail)


def test_a_sell_not_of_a_subscription_is_sized_on_the_wallets_shares() -> None:
    assert size_sell(state(held_size=D(150), held_parts=SPLIT), D(100), D(100), D(5)) == D(150)


def test_route_sizes_each_follower_of_one_wallet_on_its_own_part() -> None:
    """Leaders A and B both close; each of the wallet's subscriptions sells what it bought."""
    st = {"w_1": state(held_size=D(150), held_parts=SPLIT)}
    for sub, expected in (("sub_A", D(100)), ("sub_B", D(50)), ("sub_C", None)):
        [d] = route(trade(side=Side.SELL, size=D(100)), [follower(sub)], market(), st, D(100), policy())
        if expected is None:
            assert isinstance(d, Skip) and d.reason is Reason.NOTHING_HELD
        else:
            assert isinstance(d, OrderIntent) and (d.subscription_id, d.size) == (sub, expected)


def test_a_batch_carries_each_subscriptions_sells() -> None:
    """Leader B closes, then leader A, in one batch: sub_B's SELL of 50 is not held back from sub_A's part."""
    carry = InFlight()
    first = route(trade(id="lt_b", side=Side.SELL, size=D(100)), [follower("sub_B")], market(),
                  {"w_1": state(held_size=D(150), held_parts=SPLIT)}, D(100), policy())
    carry.add(trade(id="lt_b", side=Side.SELL, size=D(100)), "0xc", first, D(100))
    assert carry.selling("w_1", trade().asset_id) == {"sub_B": 50_000_000}
    assert carry.selling("w_1", "another") is None and carry.selling("w_2", trade().asset_id) is None
    by_sub = selling_by(None, {}, {}, carry.selling("w_1", trade().asset_id))
    st = state(held_size=D(150), held_parts=SPLIT, reserved_sell_size=D(50), selling_by=by_sub)
    [d] = route(trade(id="lt_a", side=Side.SELL, size=D(100)), [follower("sub_A")], market(), {"w_1": st}, D(100),
                policy())
    assert isinstance(d, OrderIntent) and d.size == D(100)


@pytest.mark.parametrize(("listed", "sold", "subs", "carried", "expected"), [
    (None, {}, {}, None, None),
    ([("co_1", 50_000_000)], {}, {}, None, None),  # not known by subscription (an entry from before)
    ([("co_1", 50_000_000)], {}, {"co_1": "sub_A"}, None, {"sub_A": D(50)}),
    ([("co_1", 50_000_000)], {"co_1": D(20)}, {"co_1": "sub_A"}, None, {"sub_A": D(30)}),  # 20 filled
    ([("co_1", 50_000_000)], {"co_1": D(70)}, {"co_1": "sub_A"}, None, None),  # all filled, release pending
    ([("co_1", 50_000_000), ("co_2", 10_000_000), ("co_3", 5_000_000)], {}, {"co_1": "sub_A", "co_2": "sub_A",
                                                                           "co_3": "sub_B"},
     {"sub_B": 1_500_000}, {"sub_A": D(60), "sub_B": D("6.5")}),
])
def test_selling_by(listed: list[tuple[str, int]] | None, sold: dict[str, Decimal], subs: dict[str, str],
                    carried: dict[str, int] | None, expected: dict[str, Decimal] | None) -> None:
    assert selling_by(listed, sold, subs, carried) == expected
