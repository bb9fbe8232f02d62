"""The operator ceiling per order (``TT_MAX_ORDER_USD``, :func:`common.config.max_order_usd`), pure.

What an order is worth: a BUY its USD amount (a GTC BUY sized in shares: size × limit), a SELL its size ×
price. The router cuts a copy above the ceiling to it (a BUY to the ceiling, a SELL to the shares the ceiling
sells at the price, rounded down to the share step) and notes the cut on the order ("MAX_ORDER_USD: ...");
the executor sizes a SELL sent as a fraction the same way, cuts an exit (a copied or a trigger's SELL) that its
limit, from the book, values above the ceiling once more, and refuses any other order above it
(``MAX_ORDER_USD_EXCEEDED``).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from common.decimals import ZERO, fmt

MAX_ORDER_USD = "MAX_ORDER_USD"  # the reason of a cut (and of a copy skipped when the cut leaves too little)
MAX_ORDER_USD_EXCEEDED = "MAX_ORDER_USD_EXCEEDED"  # the reason an order above the ceiling is refused
SHARE_STEP = Decimal("0.01")


def cap_buy(amount: Decimal, ceiling: Decimal | None) -> tuple[Decimal, str]:
    """``amount`` (USD) held to the ceiling, and the note when it was cut ("" when not)."""
    if ceiling is None or amount <= ceiling:
        return amount, ""
    return ceiling, f"{MAX_ORDER_USD}: ${fmt(amount)} cut to the operator ceiling ${fmt(ceiling)}"


def cap_sell(size: Decimal, price: Decimal, ceiling: Decimal | None) -> tuple[Decimal, str]:
    """A SELL of ``size`` shares at ``price`` held to the ceiling (size × price), and the note when it was cut."""
    if ceiling is None or price <= ZERO or size * price <= ceiling:
        return size, ""
    cut = (ceiling / price).quantize(SHARE_STEP, rounding=ROUND_DOWN)
    return cut, (f"{MAX_ORDER_USD}: {fmt(size)} shares × ${fmt(price)} = ${fmt(size * price)} cut to "
                 f"{fmt(cut)} shares by the operator ceiling ${fmt(ceiling)}")


def above_ceiling(worth: Decimal, ceiling: Decimal | None, how: str) -> tuple[str, str] | None:
    """The refusal of an order worth ``worth`` USD (``how``: the arithmetic, for the detail), or None."""
    if ceiling is None or worth <= ceiling:
        return None
    return MAX_ORDER_USD_EXCEEDED, f"{how} = ${fmt(worth)} > the operator ceiling TT_MAX_ORDER_USD ${fmt(ceiling)}"
