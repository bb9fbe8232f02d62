"""A copied SELL of a position that keeps a split, while other SELLs of it are in flight, and when the other parts
keep only sub-cent leftovers (pure).

A SELL takes its own subscription's shares first and the rest from EVERY OTHER PART in proportion (the executor's
``subscription_shares.take``): another subscription's SELL copy in flight is set aside from a part only up to that
subscription's own part; what it may sell beyond it (a copy sized on the wallet's shares before a split was kept,
or of a subscription with no part) counts against every part, as a SELL not known by subscription does.

How a copy is then sized, and the sub-cent leftovers a proportional take leaves: ``SPILL_CASES`` in
test_sell_parts.py.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.holdings import others_own

D = Decimal
THREE = {"sub_A": D(100), "sub_B": D(50), "sub_C": D(50)}


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
