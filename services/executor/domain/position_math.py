"""Position arithmetic for fills (pure): size, average price, cost basis, realized PnL."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ZERO

MONEY_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class Position:
    """A wallet's holding of one token."""

    size: Decimal = ZERO
    avg_price: Decimal = ZERO
    cost_usd: Decimal = ZERO
    realized_pnl_usd: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class FillEffect:
    """A position after one fill, with the changes the subscription's stats need."""

    position: Position
    realized_pnl_usd: Decimal  # booked by this fill (SELLs; a BUY whose fee took every share)
    exposure_delta_usd: Decimal  # change of cost basis
    opened: bool  # size went from zero to positive
    closed: bool  # size went from positive to zero
    oversold: Decimal  # shares a SELL reported beyond what was held (ignored, never negative)


def apply_fill(pos: Position, *, buying: bool, size: Decimal, price: Decimal,
               fee_shares: Decimal = ZERO, notional: Decimal | None = None) -> FillEffect:
    """The position after a fill of ``size`` shares at ``price`` (``notional``, when the venue gave
    the exact USD amount, replaces ``size × price``).

    BUY: the fee is taken in shares, so the holding changes by ``size - fee_shares`` (a fee larger than its fill,
    or reported alone with ``size`` 0, takes shares already held; never below zero) while the cost grows by
    ``size × price``; a fee that takes every share leaves no cost: what they cost is a realized loss. SELL:
    reduces the holding (never below zero) and books ``sold × (price − avg_price)`` as realized PnL; the cost
    basis falls by ``sold × avg_price`` (by all of it when the SELL closes the position).
    """
    fee = max(ZERO, fee_shares) if buying else ZERO
    if size <= 0 and fee <= 0:
        return FillEffect(pos, ZERO, ZERO, False, False, ZERO)
    usd = notional if notional is not None else size * price
    if buying:
        cost = pos.cost_usd + usd
        new_size = max(ZERO, pos.size + size - fee)
        if new_size == 0:  # the fee took every share: their cost is freed as a loss, as a closing SELL frees it
            new = Position(ZERO, ZERO, ZERO, pos.realized_pnl_usd - cost)
            return FillEffect(new, -cost, -pos.cost_usd, False, pos.size > 0, ZERO)
        new = Position(new_size, (cost / new_size).quantize(MONEY_QUANTUM), cost, pos.realized_pnl_usd)
        return FillEffect(new, ZERO, usd, pos.size == 0, False, ZERO)
    sold = min(size, pos.size)
    oversold = size - sold
    new_size = pos.size - sold
    # the average is rounded to 8 decimals: a close realizes against the cost the position still carries
    basis = min(pos.cost_usd, sold * pos.avg_price) if new_size > 0 else pos.cost_usd if sold > 0 else ZERO
    realized = usd * sold / size - basis
    new_cost = pos.cost_usd - basis if new_size > 0 else ZERO
    delta = new_cost - pos.cost_usd
    new = Position(new_size, pos.avg_price if new_size > 0 else ZERO, new_cost, pos.realized_pnl_usd + realized)
    return FillEffect(new, realized, delta, False, pos.size > 0 and new_size == 0, oversold)
