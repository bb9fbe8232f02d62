"""Opaque keyset page tokens, signed (pure).

A token is ``<payload>.<mac>``: base64url (no padding) of a small JSON object (list kind, a fingerprint
of the list's filters, the (time in µs, id) of the last row returned), then the first 16 bytes of its
HMAC-SHA256 under a server-side key (``control_keys``, migration 0430), base64url. A token altered,
forged or cut short fails the MAC; a genuine token from another list, or from the same list with other
filters, fails the kind / fingerprint check. Every refusal is InvalidArgument naming ``pageToken``.
Keyset pagination is stable across inserts: a page never repeats or skips a row that existed when the
first page was read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from services.control.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TOKEN_LEN = 512
MAC_BYTES = 16
MIN_KEY_BYTES = 16


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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Encodes and checks the page tokens of every list under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a page-token key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:MAC_BYTES])

    def encode(self, kind: str, fp: str, cursor: Cursor) -> str:
        """The token of the page after ``cursor``."""
        payload = _b64(orjson.dumps({"k": kind, "f": fp, "t": to_micros(cursor.time), "i": cursor.id}))
        return f"{payload}.{self._mac(payload)}"

    def decode(self, token: str, kind: str, fp: str, path: str = "pageToken") -> Cursor | None:
        """The cursor in ``token`` (``None`` for the first page); InvalidArgument when it is not ours."""
        token = token.strip()
        if not token:
            return None
        payload, dot, mac = token.partition(".")
        if len(token) > MAX_TOKEN_LEN or not dot or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise InvalidArgument(path, "invalid page token")
        try:
            data = orjson.loads(_unb64(payload))
            ok = (isinstance(data, dict) and data.get("k") == kind and isinstance(data.get("t"), int)
                  and isinstance(data.get("i"), str) and isinstance(data.get("f"), str))
            if not ok:
                raise InvalidArgument(path, "page token belongs to another list")
            if data["f"] != fp:
                raise InvalidArgument(path, "page token belongs to a list with other filters")
            return Cursor(from_micros(data["t"]), data["i"])
        except (ValueError, binascii.Error, OverflowError, orjson.JSONDecodeError):
            raise InvalidArgument(path, "invalid page token") from None
