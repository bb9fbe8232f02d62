"""Opaque keyset page tokens (pure).

A token is base64url (no padding) of a small JSON object: list kind, a fingerprint of the list's
filters, and the (time in µs, id) of the last row returned. Keyset pagination is stable across
inserts: a page never repeats or skips a row that existed when the first page was read. A token
from another list, or from the same list with other filters, is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from services.control.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TOKEN_LEN = 512


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position after the last row of a page."""

    time: datetime
    id: str


def fingerprint(*filters: object) -> str:
    """A short hash of the list's filter values."""
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def to_micros(ts: datetime) -> int:
    """Microseconds since the epoch (exact for PostgreSQL timestamptz)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=us)


def encode(kind: str, fp: str, cursor: Cursor) -> str:
    """The token of the page after ``cursor``."""
    raw = orjson.dumps({"k": kind, "f": fp, "t": to_micros(cursor.time), "i": cursor.id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, kind: str, fp: str, path: str = "pageToken") -> Cursor | None:
    """The cursor in ``token`` (``None`` for the first page); InvalidArgument when it is not ours."""
    token = token.strip()
    if not token:
        return None
    if len(token) > MAX_TOKEN_LEN:
        raise InvalidArgument(path, "invalid page token")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        ok = (isinstance(data, dict) and data.get("k") == kind and isinstance(data.get("t"), int)
              and isinstance(data.get("i"), str) and isinstance(data.get("f"), str))
        if not ok:
            raise InvalidArgument(path, "invalid page token")
        if data["f"] != fp:
            raise InvalidArgument(path, "page token belongs to a list with other filters")
        return Cursor(from_micros(data["t"]), data["i"])
    except (ValueError, binascii.Error, OverflowError, orjson.JSONDecodeError):
        raise InvalidArgument(path, "invalid page token") from None
