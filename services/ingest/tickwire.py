"""PriceTick wire bytes without building the message (pure).

A tick goes out for nearly every book change (10,000 a second under load), and building a
``PriceTick`` from keyword arguments then serializing it cost twice what writing its protobuf
encoding directly does: the asset's id fields are encoded once per book, the number fields come
from memos, and the two timestamps of a frame's ticks repeat. The bytes are what
``PriceTick.SerializeToString()`` gives (fields in number order, proto3 defaults left out).
"""

from __future__ import annotations

from decimal import Decimal

from common.decimals import fmt
from common.protowire import varint

_CACHE_MAX = 100_000


def string_field(number: int, text: str) -> bytes:
    """A length-delimited field (b"" for the empty string, as proto3 leaves it out)."""
    if not text:
        return b""
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def head(asset_id: str, condition_id: str) -> bytes:
    """Fields 1 (asset_id) and 2 (condition_id)."""
    return string_field(1, asset_id) + string_field(2, condition_id)


class _Memo:
    """Field bytes of a decimal (``fmt``) per value, for one field number; bounded."""

    __slots__ = ("number", "values")

    def __init__(self, number: int) -> None:
        self.number = number
        self.values: dict[Decimal, bytes] = {}

    def __call__(self, value: Decimal | None) -> bytes:
        if value is None:
            return b""
        out = self.values.get(value)
        if out is None:
            if len(self.values) >= _CACHE_MAX:
                self.values.clear()
            out = self.values[value] = string_field(self.number, fmt(value))
        return out


best_bid = _Memo(4)
best_ask = _Memo(5)
last_trade_price = _Memo(7)
tick_size = _Memo(8)
_MIDS: dict[tuple[Decimal, Decimal], bytes] = {}
_TWO = Decimal(2)


def mid(bid: Decimal | None, ask: Decimal | None) -> bytes:
    """Field 6: the midpoint when both sides have a price."""
    if bid is None or ask is None:
        return b""
    key = (bid, ask)
    out = _MIDS.get(key)
    if out is None:
        if len(_MIDS) >= _CACHE_MAX:
            _MIDS.clear()
        out = _MIDS[key] = string_field(6, fmt((bid + ask) / _TWO))
    return out


def kind(value: int) -> bytes:
    """Field 3 (enum)."""
    return b"\x18" + varint(value) if value else b""


STALE = b"\x48\x01"  # field 9 = true


def winner(asset_id: str) -> bytes:
    """Field 10."""
    return string_field(10, asset_id)


class Stamps:
    """Fields 11 (venue ms) and 12 (received ns); the last pair is remembered (a frame's ticks share it)."""

    __slots__ = ("_key", "_out")

    def __init__(self) -> None:
        self._key: tuple[int, int] = (-1, -1)
        self._out = b""

    def __call__(self, venue_ms: int, received_ns: int) -> bytes:
        key = (venue_ms, received_ns)
        if key != self._key:
            self._key = key
            self._out = ((b"\x58" + varint(venue_ms) if venue_ms else b"")
                         + (b"\x60" + varint(received_ns) if received_ns else b""))
        return self._out
