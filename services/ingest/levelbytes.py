"""The bytes a stored book is joined from: each level as stored in Redis (``["0.5","10"]``) and each number's
canonical text, remembered while they recur (:class:`~common.memo.Memo`): a level that comes back costs a
lookup, not an encoding."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from common.decimals import fmt
from common.memo import Memo

MEMO_SIZE = 4096  # entries per generation: the levels and numbers that recur (a snapshot reuses its book's own)
LEVEL_JSON: Memo[tuple[Decimal, Decimal], bytes] = Memo(MEMO_SIZE)
NUMBER_BYTES: Memo[Decimal, bytes] = Memo(MEMO_SIZE)
# Canonical strings of the mids seen (few distinct bid/ask pairs on a tick grid); bounded.
MIDS: Memo[tuple[Decimal, Decimal], str] = Memo(MEMO_SIZE)
_LEVELS = LEVEL_JSON.hot
_NUMBERS = NUMBER_BYTES.hot
_MIDS = MIDS.hot
_TWO = Decimal(2)
JSON_BOOL = {True: b"true", False: b"false"}  # a flag as JSON


def number_bytes(value: Decimal) -> bytes:
    """``fmt(value)`` as bytes."""
    out = _NUMBERS.get(value)
    if out is None:
        out = NUMBER_BYTES.get(value) or NUMBER_BYTES.put(value, fmt(value).encode())
    return out


def level_json(price: Decimal, size: Decimal) -> bytes:
    """One level as stored in a book's JSON: ``["<price>","<size>"]``."""
    key = (price, size)
    out = _LEVELS.get(key)
    if out is None:
        out = LEVEL_JSON.get(key) or LEVEL_JSON.put(key, b'["%s","%s"]' % (number_bytes(price), number_bytes(size)))
    return out


def levels_json(prices: Iterable[Decimal], levels: dict[Decimal, Decimal], old_levels: dict[Decimal, Decimal],
                old_json: Iterable[tuple[Decimal, bytes]]) -> list[bytes]:
    """The stored bytes of ``levels`` in the order of ``prices``, reusing ``old_json`` where the size is unchanged."""
    old = dict(old_json)
    out = []
    for price in prices:
        size = levels[price]
        js = old.get(price) if old_levels.get(price) == size else None
        out.append(js if js is not None else level_json(price, size))
    return out


def mid_text(bid: Decimal, ask: Decimal) -> str:
    """``fmt((bid + ask) / 2)``, remembered per pair."""
    key = (bid, ask)
    return _MIDS.get(key) or MIDS.get(key) or MIDS.put(key, fmt((bid + ask) / _TWO))
