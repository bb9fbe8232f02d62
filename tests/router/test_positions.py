"""Leader net position bookkeeping and the UTC day."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.model import Side
from services.router.domain.positions import apply_leader_trade, utc_day_start_ms

D = Decimal
DAY = 86_400_000


@pytest.mark.parametrize(
    ("before", "side", "size", "after"),
    [(None, Side.BUY, "10", "10"), (D("10"), Side.BUY, "5", "15"), (D("10"), Side.SELL, "4", "6"),
     (D("10"), Side.SELL, "10", "0"), (D("10"), Side.SELL, "25", "0"), (D(0), Side.SELL, "3", "0"),
     (None, Side.SELL, "3", None)],  # a sell of a position never seen bought leaves it unknown
)
def test_apply_leader_trade(before: Decimal | None, side: Side, size: str, after: str | None) -> None:
    assert apply_leader_trade(before, side, D(size)) == (D(after) if after is not None else None)


def test_utc_day_start() -> None:
    assert utc_day_start_ms(3 * DAY + 12_345) == 3 * DAY
    assert utc_day_start_ms(3 * DAY) == 3 * DAY
