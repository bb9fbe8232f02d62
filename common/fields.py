"""Strict readers of venue JSON fields, shared by every parser of Polymarket payloads (pure, no I/O).

Each reader takes the decoded object and the key (or its spellings, camelCase and snake_case) and returns
the value in its domain type, or raises :class:`ParseError` whose ``kind`` is the metric reason code.
Amounts go through ``str`` to Decimal, never through float arithmetic.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.decimals import parse_decimal
from common.text import storable

# Parse-error kinds (metric attribute ``kind``; UPPER_SNAKE reason codes).
NOT_JSON = "NOT_JSON"
TOO_LARGE = "TOO_LARGE"
BAD_SHAPE = "BAD_SHAPE"
MISSING_FIELD = "MISSING_FIELD"
BAD_FIELD = "BAD_FIELD"
BAD_NUMBER = "BAD_NUMBER"
_HEX = frozenset("0123456789abcdef")
MAX_SECONDS = 100_000_000_000  # year 5138: anything above is not a seconds timestamp
MAX_MS = MAX_SECONDS * 1000


class ParseError(ValueError):
    """A frame or field the parsers cannot accept; ``kind`` is the metric reason code."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def get(d: dict[str, Any], *keys: str) -> Any:
    """The first present key's value (camelCase and snake_case spellings), else None."""
    for key in keys:
        if key in d:
            return d[key]
    return None


def text(d: dict[str, Any], *keys: str, required: bool = False, max_len: int = 2000) -> str:
    """A string field ("" when absent and optional)."""
    value = get(d, *keys)
    if value is None:
        if required:
            raise ParseError(MISSING_FIELD, keys[0])
        return ""
    if not isinstance(value, str):
        raise ParseError(BAD_FIELD, f"{keys[0]} must be a string")
    if len(value) > max_len:
        raise ParseError(BAD_FIELD, f"{keys[0]} too long")
    return storable(value)


def address(d: dict[str, Any], *keys: str, required: bool = True) -> str:
    """A 0x + 40-hex address, lower-cased."""
    value = text(d, *keys, required=required).lower()
    if not value and not required:
        return ""
    if len(value) != 42 or not value.startswith("0x") or not set(value[2:]) <= _HEX:
        raise ParseError(BAD_FIELD, f"{keys[0]} is not an address")
    return value


def tx_hash(d: dict[str, Any], *keys: str, required: bool = True) -> str:
    """A 0x + 64-hex transaction hash, lower-cased."""
    value = text(d, *keys, required=required).lower()
    if not value and not required:
        return ""
    if len(value) != 66 or not value.startswith("0x") or not set(value[2:]) <= _HEX:
        raise ParseError(BAD_FIELD, f"{keys[0]} is not a transaction hash")
    return value


def condition_id(d: dict[str, Any], *keys: str) -> str:
    """A condition id (0x + 64 hex) lower-cased; "" when absent."""
    return tx_hash(d, *keys, required=False)


def canonical_token_id(digits: str) -> str:
    """A token id's decimal digits in the one form every service books them in: without leading zeros."""
    return digits.lstrip("0") or "0"


def token_id(d: dict[str, Any], *keys: str, required: bool = True) -> str:
    """An ERC-1155 token id as a decimal string (a JSON number is refused: it would lose digits)."""
    value = get(d, *keys)
    if value is None or value == "":
        if required:
            raise ParseError(MISSING_FIELD, keys[0])
        return ""
    if not isinstance(value, str):
        raise ParseError(BAD_FIELD, f"{keys[0]} must be a decimal string")
    if not value.isascii() or not value.isdigit() or len(value) > 80:
        raise ParseError(BAD_FIELD, f"{keys[0]} is not a token id")
    return canonical_token_id(value)


def decimal(d: dict[str, Any], *keys: str, required: bool = True) -> Decimal | None:
    """A decimal from a JSON number or string, via ``str`` (never through float arithmetic)."""
    value = get(d, *keys)
    if value is None or value == "":
        if required:
            raise ParseError(MISSING_FIELD, keys[0])
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ParseError(BAD_NUMBER, f"{keys[0]} must be a number")
    try:
        return parse_decimal(value)
    except ValueError as exc:
        raise ParseError(BAD_NUMBER, f"{keys[0]}: {exc}") from None


def integer(d: dict[str, Any], *keys: str, default: int | None = None, lo: int = -(2**31),
            hi: int = 2**31 - 1) -> int:
    """An integer from a JSON integer (or an integral number/string)."""
    value = get(d, *keys)
    if value is None or value == "":
        if default is None:
            raise ParseError(MISSING_FIELD, keys[0])
        return default
    dec = decimal(d, *keys)
    if dec is None or dec != dec.to_integral_value():
        raise ParseError(BAD_NUMBER, f"{keys[0]} must be an integer")
    result = int(dec)
    if not lo <= result <= hi:
        raise ParseError(BAD_NUMBER, f"{keys[0]} out of range")
    return result


def seconds_as_ms(d: dict[str, Any], *keys: str) -> int:
    """A timestamp the venue sends in seconds, as Unix milliseconds."""
    value = decimal(d, *keys)
    assert value is not None
    if not 0 <= value < MAX_SECONDS:
        raise ParseError(BAD_NUMBER, f"{keys[0]} is not a seconds timestamp")
    return int(value * 1000)


def millis(d: dict[str, Any], *keys: str, required: bool = False) -> int:
    """A timestamp the venue sends in milliseconds (number or string); 0 when absent and optional."""
    value = decimal(d, *keys, required=required)
    if value is None:
        return 0
    if not 0 <= value < MAX_MS:
        raise ParseError(BAD_NUMBER, f"{keys[0]} is not a milliseconds timestamp")
    return int(value)


def side(d: dict[str, Any], *keys: str, required: bool = True) -> str:
    """BUY or SELL ("" when absent and optional)."""
    value = text(d, *keys, required=required).upper()
    if not value and not required:
        return ""
    if value not in ("BUY", "SELL"):
        raise ParseError(BAD_FIELD, f"{keys[0]} must be BUY or SELL")
    return value
