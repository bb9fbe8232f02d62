"""Protobuf wire-format primitives for the few hot paths that assemble or cut serialized messages by
hand (pure): base-128 varints."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """The base-128 varint of a non-negative integer, or of a negative int64 as its 10-byte two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``pos`` in ``data`` and the position after it; ``IndexError`` when ``data`` ends
    inside it or it runs past 10 bytes (no varint is longer: an unbounded one costs time quadratic in its length)."""
    result = shift = 0
    while shift < 70:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise IndexError("varint longer than 10 bytes")
