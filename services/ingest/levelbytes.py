"""The bytes a stored book is joined from: each level as stored in Redis (``["0.5","10"]``) and each number's
canonical text, remembered while they recur (:class:`~common.memo.Memo`): a level that comes back costs a
lookup, not an encoding."""

from __future__ import annotations

from decimal import Decimal

from common.decimals import fmt
from common.memo import Memo

MEMO_SIZE = 4096  # entries per generation: the levels and numbers that recur (a snapshot reuses its book's own)
LEVEL_JSON: Memo[tuple[Decimal, Decimal], bytes] = Memo(MEMO_SIZE)
NUMBER_BYTES: Memo[Decimal, bytes] = Memo(MEMO_SIZE)
_LEVELS = LEVEL_JSON.hot
_NUMBERS = NUMBER_BYTES.hot
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
