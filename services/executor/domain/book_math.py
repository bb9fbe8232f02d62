"""Order-book arithmetic on best-first levels (pure, Decimal only).

A side of the book is a sequence of ``(price, size)`` levels, best first: asks ascending for a BUY,
bids descending for a SELL. "Within the limit" means at or better than the limit price. A level of size 0 or less
holds nothing: every function here reads the side as if it were not there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from common.decimals import ZERO

Level = tuple[Decimal, Decimal]
Levels = Sequence[Level]

SIZE_QUANTUM = Decimal("0.01")  # shares are traded in hundredths


def within(price: Decimal, limit: Decimal, buying: bool) -> bool:
    """True when ``price`` is at or better than ``limit`` for the taker's side."""
    return price <= limit if buying else price >= limit


def volume_within(levels: Levels, limit: Decimal, buying: bool) -> Decimal:
    """Shares available at or better than ``limit``."""
    total = ZERO
    for price, size in levels:
        if not within(price, limit, buying):
            break
        if size > 0:
            total += size
    return total


def notional_within(levels: Levels, limit: Decimal, buying: bool) -> Decimal:
    """USD (price × size) available at or better than ``limit``."""
    total = ZERO
    for price, size in levels:
        if not within(price, limit, buying):
            break
        if size > 0:
            total += price * size
    return total


def best_price(levels: Levels) -> Decimal | None:
    """The price of the best level that holds shares, or None when none does."""
    return next((price for price, size in levels if size > 0), None)


def price_for_volume(levels: Levels, size: Decimal) -> Decimal | None:
    """The worst price reached when taking ``size`` shares, or None when the side holds less."""
    if size <= 0:
        return best_price(levels)
    remaining = size
    for price, level_size in levels:
        if level_size <= 0:
            continue
        remaining -= level_size
        if remaining <= 0:
            return price
    return None


def vwap(levels: Levels, size: Decimal) -> Decimal | None:
    """Average price of taking ``size`` shares, or None when the side holds less (or size ≤ 0)."""
    if size <= 0:
        return None
    remaining = size
    cost = ZERO
    for price, level_size in levels:
        if level_size <= 0:
            continue
        take = min(remaining, level_size)
        cost += take * price
        remaining -= take
        if remaining <= 0:
            return cost / size
    return None


@dataclass(frozen=True, slots=True)
class Walk:
    """Result of walking a side of the book: shares taken and what they cost."""

    size: Decimal
    cost: Decimal

    @property
    def avg_price(self) -> Decimal | None:
        """Average price, or None when nothing was taken."""
        return self.cost / self.size if self.size else None


def quantize_size(size: Decimal) -> Decimal:
    """Shares rounded down to the traded quantum."""
    return size.quantize(SIZE_QUANTUM, rounding=ROUND_DOWN)


def walk_buy_usd(asks: Levels, amount_usd: Decimal, limit: Decimal) -> Walk:
    """Spend up to ``amount_usd`` on asks at or below ``limit``; shares rounded down per level."""
    remaining = amount_usd
    size = ZERO
    cost = ZERO
    for price, level_size in asks:
        if remaining <= 0 or price > limit or price <= 0:
            break
        take = quantize_size(min(level_size, remaining / price))
        if take <= 0:
            if quantize_size(remaining / price) <= 0:
                break  # what is left buys less than one share step
            continue  # a level smaller than one share step (a remnant): the levels behind it still count
        size += take
        cost += take * price
        remaining -= take * price
    return Walk(size, cost)


def walk_sell_size(bids: Levels, size: Decimal, limit: Decimal) -> Walk:
    """Sell up to ``size`` shares into bids at or above ``limit``."""
    remaining = size
    taken = ZERO
    proceeds = ZERO
    for price, level_size in bids:
        if remaining <= 0 or price < limit:
            break
        if level_size <= 0:
            continue
        take = min(level_size, remaining)
        taken += take
        proceeds += take * price
        remaining -= take
    return Walk(taken, proceeds)
