"""Leader net position per asset (as the router saw it) and the UTC day."""

from __future__ import annotations

from decimal import Decimal

from services.router.domain.model import ZERO, Side

DAY_MS = 86_400_000


def leader_delta(side: Side, size: Decimal) -> Decimal:
    """Change of the leader's net shares for one of its fills."""
    return size if side is Side.BUY else -size


def apply_leader_trade(before: Decimal | None, side: Side, size: Decimal) -> Decimal | None:
    """The leader's net shares after a fill, never below zero (sells of shares we never saw bought); None
    (no record) stays None after a sell: a SELL of a position never seen bought tells nothing of it, and a
    record of 0 would make the leader's next SELL look like a close."""
    if before is None and side is Side.SELL:
        return None
    return max(ZERO, (before or ZERO) + leader_delta(side, size))


def utc_day_start_ms(now_ms: int) -> int:
    """Start of the current UTC day, Unix milliseconds."""
    return now_ms - now_ms % DAY_MS
