"""Leader net position per asset (as the router saw it) and the follower's realized PnL of the day."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from services.router.domain.model import ZERO, Side

DAY_MS = 86_400_000


def leader_delta(side: Side, size: Decimal) -> Decimal:
    """Change of the leader's net shares for one of its fills."""
    return size if side is Side.BUY else -size


def apply_leader_trade(before: Decimal | None, side: Side, size: Decimal) -> Decimal:
    """The leader's net shares after a fill, never below zero (sells of shares we never saw bought)."""
    return max(ZERO, (before or ZERO) + leader_delta(side, size))


def utc_day_start_ms(now_ms: int) -> int:
    """Start of the current UTC day, Unix milliseconds."""
    return now_ms - now_ms % DAY_MS


@dataclass(frozen=True, slots=True)
class FillRow:
    """One follower fill of one asset, oldest first."""

    side: Side
    size: Decimal
    notional_usd: Decimal
    fill_time_ms: int


def realized_pnl_since(fills: Iterable[FillRow], since_ms: int) -> Decimal:
    """Realized PnL of SELL fills at or after ``since_ms`` for one asset, average-cost method.

    ``fills`` is the asset's full fill history, oldest first: BUYs raise the average cost, SELLs
    realize (notional − size × average cost) and lower the held size.
    """
    held = ZERO
    cost = ZERO
    realized = ZERO
    for f in fills:
        if f.side is Side.BUY:
            held += f.size
            cost += f.notional_usd
            continue
        avg = cost / held if held > ZERO else ZERO
        sold = min(f.size, held) if held > ZERO else ZERO
        if f.fill_time_ms >= since_ms and sold > ZERO:
            # Shares sold beyond what the history shows held have an unknown cost: counted at zero PnL.
            realized += f.notional_usd * sold / f.size - sold * avg
        held -= sold
        cost -= sold * avg
        if held <= ZERO:
            held, cost = ZERO, ZERO
    return realized
