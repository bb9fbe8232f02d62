"""Sizing a SELL that carries the fraction of the position to sell instead of a size (pure).

The router sends a copied SELL as the leader's sold fraction when the follower's copy BUY in that
market was still in flight: the executor sizes it on the position held once every earlier order of the
wallet on the asset has the venue's answer. The rules are the router's for a sized SELL:
- nothing held (less than one share step) → NOTHING_HELD;
- size = held × fraction, rounded down to the share step (everything held for a fraction of 1);
- a remainder that is positive but below the market minimum is sold too (it could never be sold);
- a size below the market minimum → SELL_BELOW_MARKET_MINIMUM (the position is kept);
- then the operator ceiling (``common.ceiling.cap_sell``) at :func:`ceiling_price`, as the router does.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from common.decimals import MIN_HELD_SHARES, ONE, ZERO, fmt

STEP = Decimal("0.01")

Refusal = tuple[str, str]  # (UPPER_SNAKE reason, detail)


def fraction_size(held: Decimal, fraction: Decimal, min_order_size: Decimal) -> Decimal | Refusal:
    """Shares to sell of ``held`` for ``fraction`` in (0, 1], or why nothing is sold."""
    if held < MIN_HELD_SHARES:
        return "NOTHING_HELD", f"follower holds {fmt(held)} shares"
    everything = held.quantize(STEP, rounding=ROUND_DOWN)
    size = everything if fraction >= ONE else (held * fraction).quantize(STEP, rounding=ROUND_DOWN)
    if ZERO < held - size < min_order_size:
        size = everything
    if size <= ZERO or size < min_order_size:
        return ("SELL_BELOW_MARKET_MINIMUM",
                f"fraction {fmt(fraction.quantize(Decimal('0.0001')))} of {fmt(held)} shares is {fmt(size)} "
                f"< market minimum {fmt(min_order_size)}")
    return size


def ceiling_price(reference_price: str, best_bid: Decimal | None) -> Decimal:
    """The price a SELL sized here is held to the operator ceiling at: the higher of its reference price and the
    best bid (its limit, derived from one of them less the slippage, is above neither); 0 when neither is known."""
    try:
        reference = Decimal(reference_price) if reference_price else ZERO
    except ArithmeticError:
        reference = ZERO
    if not reference.is_finite():
        reference = ZERO
    return max(reference, best_bid or ZERO)
