"""Decimal parsing and formatting for money, prices and sizes (never float)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from common.memo import Memo

ZERO = Decimal(0)
ONE = Decimal(1)
# Money, prices and sizes never need more than 10^30 or finer than 10^-30.
MAX_EXPONENT = 30
# Orders carry share sizes in steps of 0.01: a holding smaller than that (what a full exit leaves when
# the fee was taken in shares) can never be sold, so it counts as no position at all.
MIN_HELD_SHARES = Decimal("0.01")
# The largest USD amount a subscription or a funded balance may name (control refuses more, the router
# marks such a subscription invalid). Far above any real order, and low enough that an order of it
# times the perf multiplier (at most 10) is 10^16 micro-USD: well inside the int64 counters of the
# Redis reservations and the 28 digits of the default decimal context once rounded to the cent.
MAX_USD = Decimal(10) ** 9


def parse_decimal(value: object) -> Decimal:
    """A finite Decimal from a string, int or float-looking JSON number (via ``str``); raises ValueError."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a decimal: {value!r}")
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    if not text or len(text) > 64:
        raise ValueError(f"not a decimal: {text[:70]!r}")
    try:
        result = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal: {text!r}") from None
    if not result.is_finite():
        raise ValueError(f"not a finite decimal: {text!r}")
    if result and not -MAX_EXPONENT <= result.adjusted() <= MAX_EXPONENT:
        raise ValueError(f"decimal out of range: {text!r}")
    return result


def fmt(value: Decimal) -> str:
    """Canonical decimal string: no exponent, no trailing zeros ("0" for zero)."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# Prices on a tick grid and recurring sizes give few distinct values: their strings are remembered.
FMT_MEMO: Memo[Decimal, str] = Memo(4096)
_FMT_HOT = FMT_MEMO.hot


def fmt_memo(value: Decimal) -> str:
    """:func:`fmt`, remembered per value (bounded) for hot paths that print the same values again."""
    text = _FMT_HOT.get(value)
    if text is None:
        text = FMT_MEMO.get(value) or FMT_MEMO.put(value, fmt(value))
    return text
