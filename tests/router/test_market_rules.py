"""Market rules: tick bounds, rounding, the BUY minimum."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.market_rules import (
    buy_minimum_usd,
    floor_cents,
    floor_shares,
    within_tick_bounds,
)

D = Decimal


@pytest.mark.parametrize(
    ("price", "tick", "ok"),
    [("0.01", "0.01", True), ("0.99", "0.01", True), ("0.5", "0.01", True), ("0.009", "0.01", False),
     ("0.995", "0.01", False), ("0.995", "0.001", True), ("0.999", "0.001", True), ("0.9995", "0.001", False),
     ("0.001", "0.001", True), ("0.0005", "0.001", False), ("0.5", "0", False)],
)
def test_within_tick_bounds(price: str, tick: str, ok: bool) -> None:
    assert within_tick_bounds(D(price), D(tick)) is ok


@pytest.mark.parametrize(("amount", "expected"), [("12.349", "12.34"), ("0.999", "0.99"), ("5", "5.00")])
def test_floor_cents(amount: str, expected: str) -> None:
    assert floor_cents(D(amount)) == D(expected)


@pytest.mark.parametrize(("size", "expected"), [("714.2857", "714.28"), ("0.009", "0.00"), ("3", "3")])
def test_floor_shares(size: str, expected: str) -> None:
    assert floor_shares(D(size)) == D(expected)


@pytest.mark.parametrize(
    ("price", "min_size", "expected"),
    [("0.40", "5", "2.00"), ("0.10", "5", "1"), ("0.031", "5", "1"), ("0.95", "15", "14.25"), ("0.5", "0", "1")],
)
def test_buy_minimum_is_min_size_times_price_but_at_least_one_dollar(price: str, min_size: str,
                                                                      expected: str) -> None:
    assert buy_minimum_usd(D(price), D(min_size), D(1)) == D(expected)


@pytest.mark.parametrize(
    ("price", "min_size", "bps", "expected"),
    [("0.40", "5", 200, "2.04"),  # 5 shares at up to 0.408: $2 at 0.40 would buy 4.9, never to be sold again
     ("0.40", "5", 0, "2.00"), ("0.99", "10", 500, "10"), ("0.10", "5", 200, "1")],  # at most 1; at least $1
)
def test_buy_minimum_buys_the_minimum_size_at_the_worst_price_allowed(price: str, min_size: str, bps: int,
                                                                      expected: str) -> None:
    assert buy_minimum_usd(D(price), D(min_size), D(1), bps) == D(expected)
