"""A copied SELL of a position that keeps a split, while other SELLs of it are in flight, and when the other parts
keep only sub-cent leftovers (pure).

A SELL takes its own subscription's shares first and the rest from EVERY OTHER PART in proportion (the executor's
``subscription_shares.take``): another subscription's SELL copy in flight is set aside from a part only up to that
subscription's own part; what it may sell beyond it (a copy sized on the wallet's shares before a split was kept,
or of a subscription with no part) counts against every part, as a SELL not known by subscription does.

A proportional take leaves sub-cent residues (1e-8 shares) in the parts: when the other parts keep less than a share
step of the wallet's shares not being sold, the copy is sized on the wallet's shares not being sold, so that the
last leader's close leaves nothing held that no copy could ever sell.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.holdings import others_own
from services.router.domain.model import Reason
from services.router.domain.sells import size_sell
from tests.router.factories import state

D = Decimal
THREE = {"sub_A": D(100), "sub_B": D(50), "sub_C": D(50)}
RESIDUE = {"sub_A": D("0.00666667"), "sub_B": D("33.33333333")}  # a manual SELL of 50, then sub_A's close of 66.66


@pytest.mark.parametrize(("parts", "by_sub", "sub", "expected"), [
    (THREE, None, "sub_B", D(0)),
    (THREE, {"sub_A": D(80)}, "sub_B", D(80)),
    (THREE, {"sub_A": D(150)}, "sub_B", D(100)),  # its 50 beyond sub_A's part come off the other parts
    (THREE, {"sub_A": D(150), "sub_C": D(20)}, "sub_B", D(120)),
    (THREE, {"sub_B": D(30)}, "sub_B", D(0)),  # its own copies are never set aside
    (THREE, {"sub_D": D(30)}, "sub_B", D(0)),  # no part: all it sells is other subscriptions' shares
    (THREE, {"sub_A": D(0)}, "sub_B", D(0)),
])
def test_others_own(parts: dict[str, Decimal], by_sub: dict[str, Decimal] | None, sub: str,
                    expected: Decimal) -> None:
    assert others_own(parts, by_sub, sub) == expected


# (held, parts, in flight, of it by subscription, subscription, leader sold of 100, shares sold or a reason)
CASES = [
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
    ("50.01", {"sub_A": D("0.005"), "": D("0.005"), "sub_B": D(50)}, "0", None, "sub_B", "100", D(50)),  # a step
    ("60.005", {"sub_A": D(10), "sub_B": D("50.005")}, "9.995", {"sub_A": D("9.995")}, "sub_B", "100",
     D("50.01")),  # sub_A's copy in flight leaves 0.005 of its part
    ("60", {"sub_A": D(10), "sub_B": D(50)}, "9.995", None, "sub_B", "100", D(40)),  # might take sub_B's: kept
]


@pytest.mark.parametrize(("held", "parts", "in_flight", "by_sub", "sub", "sold", "expected"), CASES)
def test_a_copied_sell_with_sells_in_flight_and_leftovers(
        held: str, parts: dict[str, Decimal] | None, in_flight: str, by_sub: dict[str, Decimal] | None, sub: str,
        sold: str, expected: Decimal | Reason) -> None:
    st = state(held_size=D(held), held_parts=parts, reserved_sell_size=D(in_flight), selling_by=by_sub)
    got = size_sell(st, D(sold), D(100), D(5), sub)
    if isinstance(expected, Reason):
        assert isinstance(got, tuple) and got[0] is expected and got[1], got
    else:
        assert got == expected
