"""Book arithmetic on best-first levels: table-driven cases plus properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.executor.domain.book_math import (
    Walk,
    notional_within,
    price_for_volume,
    volume_within,
    vwap,
    walk_buy_usd,
    walk_sell_size,
)

D = Decimal
ASKS = ((D("0.50"), D("100")), (D("0.51"), D("200")), (D("0.53"), D("50")))
BIDS = ((D("0.49"), D("80")), (D("0.48"), D("120")), (D("0.45"), D("10")))


@pytest.mark.parametrize(("levels", "limit", "buying", "expected"), [
    (ASKS, D("0.49"), True, D("0")),
    (ASKS, D("0.50"), True, D("100")),
    (ASKS, D("0.52"), True, D("300")),
    (ASKS, D("0.99"), True, D("350")),
    (BIDS, D("0.50"), False, D("0")),
    (BIDS, D("0.48"), False, D("200")),
    (BIDS, D("0.01"), False, D("210")),
    ((), D("0.5"), True, D("0")),
])
def test_volume_within(levels, limit, buying, expected) -> None:  # type: ignore[no-untyped-def]
    assert volume_within(levels, limit, buying) == expected


@pytest.mark.parametrize(("levels", "limit", "buying", "expected"), [
    (ASKS, D("0.50"), True, D("50")),
    (ASKS, D("0.51"), True, D("152")),
    (BIDS, D("0.48"), False, D("96.8")),
])
def test_notional_within(levels, limit, buying, expected) -> None:  # type: ignore[no-untyped-def]
    assert notional_within(levels, limit, buying) == expected


@pytest.mark.parametrize(("levels", "size", "expected"), [
    (ASKS, D("1"), D("0.50")),
    (ASKS, D("100"), D("0.50")),
    (ASKS, D("100.01"), D("0.51")),
    (ASKS, D("350"), D("0.53")),
    (ASKS, D("350.01"), None),
    (BIDS, D("150"), D("0.48")),
    ((), D("1"), None),
    (ASKS, D("0"), D("0.50")),
])
def test_price_for_volume(levels, size, expected) -> None:  # type: ignore[no-untyped-def]
    assert price_for_volume(levels, size) == expected


@pytest.mark.parametrize(("levels", "size", "expected"), [
    (ASKS, D("100"), D("0.50")),
    (ASKS, D("200"), D("0.505")),
    (ASKS, D("350"), (D("50") + D("102") + D("26.5")) / D("350")),
    (ASKS, D("351"), None),
    (ASKS, D("0"), None),
    (BIDS, D("100"), D("0.488")),
])
def test_vwap(levels, size, expected) -> None:  # type: ignore[no-untyped-def]
    assert vwap(levels, size) == expected


@pytest.mark.parametrize(("amount", "limit", "expected"), [
    (D("10"), D("0.50"), Walk(D("20"), D("10.00"))),
    (D("50"), D("0.50"), Walk(D("100"), D("50.00"))),
    (D("60"), D("0.50"), Walk(D("100"), D("50.00"))),  # limit stops the walk
    (D("60"), D("0.51"), Walk(D("100") + D("19.60"), D("50") + D("9.9960"))),
    (D("1"), D("0.49"), Walk(D("0"), D("0"))),
    (D("0.001"), D("0.99"), Walk(D("0"), D("0"))),  # less than one share quantum
])
def test_walk_buy_usd(amount: Decimal, limit: Decimal, expected: Walk) -> None:
    assert walk_buy_usd(ASKS, amount, limit) == expected


def test_walk_buy_usd_steps_over_a_level_smaller_than_one_share_step() -> None:
    """A remnant of 0.005 shares at the best ask buys nothing; the level behind it still fills the order."""
    asks = ((D("0.50"), D("0.005")), (D("0.51"), D("100")))
    assert walk_buy_usd(asks, D("10"), D("0.52")) == Walk(D("19.60"), D("9.9960"))


@pytest.mark.parametrize(("size", "limit", "expected"), [
    (D("50"), D("0.49"), Walk(D("50"), D("24.50"))),
    (D("100"), D("0.48"), Walk(D("100"), D("48.80"))),
    (D("500"), D("0.48"), Walk(D("200"), D("96.80"))),
    (D("10"), D("0.50"), Walk(D("0"), D("0"))),
])
def test_walk_sell_size(size: Decimal, limit: Decimal, expected: Walk) -> None:
    assert walk_sell_size(BIDS, size, limit) == expected


levels_st = st.lists(st.tuples(st.integers(1, 99), st.integers(1, 10_000)), min_size=0, max_size=8,
                     unique_by=lambda t: t[0])


def _asks(raw: list[tuple[int, int]]) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple(sorted((D(p) / 100, D(s)) for p, s in raw))


@given(levels_st, st.integers(1, 100_000), st.integers(1, 99))
def test_buy_walk_never_overspends_nor_crosses_limit(raw, cents, limit_cents) -> None:  # type: ignore[no-untyped-def]
    asks = _asks(raw)
    amount, limit = D(cents) / 100, D(limit_cents) / 100
    w = walk_buy_usd(asks, amount, limit)
    assert w.cost <= amount
    assert w.size <= volume_within(asks, limit, True)
    if w.size:
        assert w.avg_price is not None and w.avg_price <= limit


@given(levels_st, st.integers(1, 100_000))
def test_vwap_between_best_and_worst(raw, size) -> None:  # type: ignore[no-untyped-def]
    asks = _asks(raw)
    avg = vwap(asks, D(size))
    worst = price_for_volume(asks, D(size))
    if avg is None:
        assert worst is None
    else:
        assert worst is not None and asks[0][0] <= avg <= worst
