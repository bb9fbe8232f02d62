"""Field-level validation primitives (pure). Every failure is an ``InvalidArgument`` naming the field's
lowerCamelCase JSON path, e.g. ``sizing.ratio: must be a decimal > 0, got "abc"``; only :func:`path_id`
answers ``NotFound`` (an id that cannot exist is unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from google.protobuf.descriptor import EnumDescriptor

from common.decimals import MAX_USD, MIN_HELD_SHARES, fmt, parse_decimal
from common.reservations import WALLET_ID
from services.control.errors import InvalidArgument, NotFound

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# What a decimal string may be: ASCII digits with an optional sign, point and exponent. Python's Decimal also
# reads "1_000" and digits of other scripts ("１２", "١٢"), which the contract's decimal strings are not.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TOKEN_ID = re.compile(r"^[0-9]{1,100}$")
MAX_ID_LEN = 128
MAX_TEXT_LEN = 500
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class Range:
    """A decimal interval; ``None`` bounds are open-ended. ``cap`` is an inclusive upper limit reported
    on its own ("must be at most …"), e.g. :data:`MAX_USD` on money."""

    low: Decimal | None = None
    low_inclusive: bool = True
    high: Decimal | None = None
    high_inclusive: bool = True
    cap: Decimal | None = None

    def contains(self, value: Decimal) -> bool:
        """True when ``value`` lies in the interval."""
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        if self.cap is not None and value > self.cap:
            return False
        return not (self.high is not None
                    and (value > self.high or (value == self.high and not self.high_inclusive)))

    def describe(self) -> str:
        """Human form: ``> 0``, ``>= 0``, ``in (0, 1)``, ``in (0, 100]``."""
        if self.high is None:
            return f"{'>=' if self.low_inclusive else '>'} {fmt(self.low or Decimal(0))}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"in {left}{fmt(self.low or Decimal(0))}, {fmt(self.high)}{right}"


POSITIVE = Range(Decimal(0), False)
NON_NEGATIVE = Range(Decimal(0), True)
PRICE = Range(Decimal(0), False, Decimal(1), False)
PERCENT = Range(Decimal(0), False, Decimal(100), True)
PERCENT_OR_ZERO = Range(Decimal(0), True, Decimal(100), True)
PERCENT_OPEN = Range(Decimal(0), False, Decimal(100), False)
FRACTION = Range(Decimal(0), False, Decimal(1), True)
USD = Range(Decimal(0), True, cap=MAX_USD)
USD_POSITIVE = Range(Decimal(0), False, cap=MAX_USD)
SHARES = Range(MIN_HELD_SHARES, True)  # a size of shares to sell: at least one share step (less is never sold)


MAX_SIGNIFICANT_DIGITS = 28  # what a stored value keeps (the decimal context): more is rounded, maybe out of range


def _too_precise(value: Decimal) -> bool:
    return len("".join(map(str, value.as_tuple().digits)).strip("0")) > MAX_SIGNIFICANT_DIGITS


def strict_value(raw: str) -> Decimal | None:
    """The value of ``raw`` when it is a decimal as the API writes one (ASCII digits, optional sign, point and
    exponent, unpadded, at most 64 characters), else None."""
    try:
        return parse_decimal(raw) if _DECIMAL.fullmatch(raw) else None
    except ValueError:
        return None


def decimal(path: str, raw: str, within: Range) -> Decimal:
    """Parse a decimal string and check it lies in ``within`` (with at most 28 significant digits)."""
    value = strict_value(raw)
    if value is not None and _too_precise(value):
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise InvalidArgument(path, f'must have at most {MAX_SIGNIFICANT_DIGITS} significant digits, got "{shown}"')
    if value is None or not within.contains(value):
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        if value is not None and within.cap is not None and value > within.cap:
            raise InvalidArgument(path, f'must be at most {fmt(within.cap)}, got "{shown}"')
        raise InvalidArgument(path, f'must be a decimal {within.describe()}, got "{shown}"')
    return value


@lru_cache(maxsize=4096)
def _canonical_or_none(raw: str, within: Range) -> str | None:
    """Memo of valid inputs (a create validates ~20 decimals, most of them repeats)."""
    value = strict_value(raw)
    if value is None:
        return None
    return fmt(value) if within.contains(value) and not _too_precise(value) else None


def canonical(path: str, raw: str, within: Range) -> str:
    """The canonical decimal string (``fmt``) of a valid value."""
    text = _canonical_or_none(raw, within)
    if text is None:
        decimal(path, raw, within)  # raises, naming the field
        raise AssertionError("unreachable")  # pragma: no cover
    return text


def address(path: str, raw: str) -> str:
    """A required ``0x`` + 40 hex address, lower-cased; nothing else, not even surrounding spaces."""
    value = raw
    if not value.strip():
        raise InvalidArgument(path, "required (0x + 40 hex characters)")
    if not _ADDRESS.fullmatch(value):
        shown = value if len(value) <= 50 else value[:50] + "…"
        raise InvalidArgument(path, f'must be 0x + 40 hex characters, got "{shown}"')
    return value.lower()


def identifier(path: str, raw: str, *, required: bool = True, max_len: int = MAX_ID_LEN) -> str:
    """An opaque id: printable, no spaces, at most ``max_len`` characters."""
    value = raw.strip()
    if not value:
        if required:
            raise InvalidArgument(path, "required")
        return ""
    if len(value) > max_len:
        raise InvalidArgument(path, f"must be at most {max_len} characters, got {len(value)}")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidArgument(path, "must be printable with no spaces")
    return value


def follower_id(path: str, raw: str) -> str:
    """A follower wallet id: an :func:`identifier` of ASCII letters, digits and ``_ . : -`` only."""
    value = identifier(path, raw)
    if not WALLET_ID.fullmatch(value):  # it goes into reservation records
        shown = value if len(value) <= 50 else value[:50] + "…"
        raise InvalidArgument(path, f'must contain only letters, digits, "_", ".", ":" and "-", got "{shown}"')
    return value


def path_id(entity: str, raw: str) -> str:
    """The ``{id}`` of a lookup route: required, and one that cannot be an id is NotFound like any unknown id."""
    value = raw.strip()
    if not value:
        raise InvalidArgument("id", "required")
    try:
        return identifier("id", value)
    except InvalidArgument:
        shown = "".join(c if c.isprintable() else "?" for c in value[:40]) + ("…" if len(value) > 40 else "")
        raise NotFound(f"{entity} {shown} not found") from None


def text(path: str, raw: str, *, max_len: int = MAX_TEXT_LEN) -> str:
    """Free text: printable (no control characters), at most ``max_len`` characters."""
    value = raw.strip()
    if len(value) > max_len:
        raise InvalidArgument(path, f"must be at most {max_len} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidArgument(path, "must not contain control characters")
    return value


def token_id(path: str, raw: str) -> str:
    """A Polymarket outcome token id: a decimal integer string (kept as a string)."""
    value = raw.strip()
    if not value:
        raise InvalidArgument(path, "required")
    if not _TOKEN_ID.match(value):
        shown = value if len(value) <= 50 else value[:50] + "…"
        raise InvalidArgument(path, f'must be a decimal token id, got "{shown}"')
    return value


def enum(path: str, value: int, descriptor: EnumDescriptor, *, required: bool = True) -> int:
    """An enum value that exists (and is not ``*_UNSPECIFIED`` when ``required``)."""
    names = [v.name for v in descriptor.values if v.number != 0]
    if value == 0 and required:
        raise InvalidArgument(path, f"required: one of {', '.join(names)}")
    if value not in descriptor.values_by_number:
        raise InvalidArgument(path, f"unknown value {value}: one of {', '.join(names)}")
    return value


def integer(path: str, value: int, low: int, high: int) -> int:
    """An integer within [low, high]."""
    if not low <= value <= high:
        raise InvalidArgument(path, f"must be an integer in [{low}, {high}], got {value}")
    return value


def page_size(value: int, path: str = "pageSize") -> int:
    """A page size: 0 means the default (100); otherwise 1..500."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument(path, f"must be between 1 and {MAX_PAGE_SIZE}, got {value}")
    return value


def idempotency_key(header: str | None, body: str | None) -> str | None:
    """The create's idempotency key from the ``idempotency-key`` metadata or ``requestId``; both must agree."""
    h = (header or "").strip() or None
    b = (body or "").strip() or None
    if h is not None and b is not None and h != b:
        raise InvalidArgument("requestId", "differs from the Idempotency-Key header")
    key = h or b
    if key is None:
        return None
    if len(key) > 255 or not key.isprintable():
        raise InvalidArgument("requestId", "idempotency key must be 1..255 printable characters")
    return key
