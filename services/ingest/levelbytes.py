"""The bytes a stored book is joined from: each level as stored in Redis (``["0.5","10"]``) and each number's
canonical text, cached (bounded): a book rewritten at every flush costs one join, not one encoding per level."""

from __future__ import annotations

from decimal import Decimal

from common.decimals import fmt

CACHE_MAX = 100_000
_LEVEL_JSON: dict[tuple[Decimal, Decimal], bytes] = {}
_BYTES: dict[Decimal, bytes] = {}


def number_bytes(value: Decimal) -> bytes:
    """``fmt(value)`` as bytes."""
    out = _BYTES.get(value)
    if out is None:
        if len(_BYTES) >= CACHE_MAX:
            _BYTES.clear()
        out = _BYTES[value] = fmt(value).encode()
    return out


def level_json(price: Decimal, size: Decimal) -> bytes:
    """One level as stored in a book's JSON: ``["<price>","<size>"]``."""
    key = (price, size)
    out = _LEVEL_JSON.get(key)
    if out is None:
        if len(_LEVEL_JSON) >= CACHE_MAX:
            _LEVEL_JSON.clear()
        out = _LEVEL_JSON[key] = b'["%s","%s"]' % (number_bytes(price), number_bytes(size))
    return out
