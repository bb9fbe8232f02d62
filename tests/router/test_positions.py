"""Leader net position bookkeeping and the follower's realized PnL of the day."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.model import Side
from services.router.domain.positions import FillRow, apply_leader_trade, realized_pnl_since, utc_day_start_ms

D = Decimal
DAY = 86_400_000


@pytest.mark.parametrize(
    ("before", "side", "size", "after"),
    [(None, Side.BUY, "10", "10"), (D("10"), Side.BUY, "5", "15"), (D("10"), Side.SELL, "4", "6"),
     (D("10"), Side.SELL, "10", "0"), (D("10"), Side.SELL, "25", "0"), (None, Side.SELL, "3", "0")],
)
def test_apply_leader_trade(before: Decimal | None, side: Side, size: str, after: str) -> None:
    assert apply_leader_trade(before, side, D(size)) == D(after)


def test_utc_day_start() -> None:
    assert utc_day_start_ms(3 * DAY + 12_345) == 3 * DAY
    assert utc_day_start_ms(3 * DAY) == 3 * DAY


def _f(side: Side, size: str, notional: str, t: int) -> FillRow:
    return FillRow(side, D(size), D(notional), t)


@pytest.mark.parametrize(
    ("fills", "since", "expected"),
    [
        ([], 0, "0"),
        ([_f(Side.BUY, "100", "40", 1)], 0, "0"),
        # bought 100 @ 0.40, sold 50 @ 0.30 today: -5
        ([_f(Side.BUY, "100", "40", 1), _f(Side.SELL, "50", "15", DAY + 1)], DAY, "-5"),
        # the same sell yesterday does not count today
        ([_f(Side.BUY, "100", "40", 1), _f(Side.SELL, "50", "15", DAY - 1)], DAY, "0"),
        # average cost over two buys (0.40 and 0.60 -> 0.50), sell 100 @ 0.70: +20
        ([_f(Side.BUY, "100", "40", 1), _f(Side.BUY, "100", "60", 2), _f(Side.SELL, "100", "70", DAY)], DAY, "20"),
        # sell more than the history shows: the excess has unknown cost and counts at zero PnL
        ([_f(Side.BUY, "10", "5", 1), _f(Side.SELL, "20", "8", DAY)], DAY, "-1"),
        # two sells today
        ([_f(Side.BUY, "100", "50", 1), _f(Side.SELL, "50", "20", DAY), _f(Side.SELL, "50", "30", DAY + 5)], DAY,
         "0"),
    ],
)
def test_realized_pnl_since(fills: list[FillRow], since: int, expected: str) -> None:
    assert realized_pnl_since(fills, since) == D(expected)
