"""Market rules: price bounds [tick, 1 − tick], rounding, minimum order sizes."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from services.router.domain.model import CENT, ONE, SHARE_QUANTUM

_BPS = Decimal(10_000)


def within_tick_bounds(price: Decimal, tick: Decimal) -> bool:
    """True when ``tick <= price <= 1 - tick`` (the only prices an order can have)."""
    return tick > 0 and tick <= price <= ONE - tick


def floor_cents(amount: Decimal) -> Decimal:
    """USD amount rounded down to the cent (never spend more than decided)."""
    return amount.quantize(CENT, rounding=ROUND_DOWN)


def floor_shares(size: Decimal) -> Decimal:
    """Share size rounded down to the venue's share accuracy (never sell more than held)."""
    return size.quantize(SHARE_QUANTUM, rounding=ROUND_DOWN)


def buy_minimum_usd(price: Decimal, min_order_size: Decimal, marketable_min_usd: Decimal,
                    slippage_bps: int = 0) -> Decimal:
    """Smallest BUY worth sending at ``price``: enough USD for min_order_size shares at the worst price the
    copy may pay (``price`` moved by the slippage tolerance, at most 1), and at least the marketable-BUY
    minimum ($1). Fewer shares than the market's minimum could be bought but never sold again."""
    worst = min(price * (ONE + Decimal(max(0, slippage_bps)) / _BPS), ONE)
    return max(min_order_size * worst, marketable_min_usd)
