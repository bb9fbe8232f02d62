"""Protobuf varints as the hand-written wire cutters read them (``common.protowire``)."""

from __future__ import annotations

import pytest

from common.protowire import read_varint, varint


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, (1 << 63) - 1, -1, -(1 << 63)])
def test_a_varint_reads_back_to_its_value_and_end(value: int) -> None:
    data = b"\x07" + varint(value) + b"\x07"
    assert read_varint(data, 1) == (value % (1 << 64), len(data) - 1)


def test_a_varint_cut_short_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        read_varint(b"\x08\xff\xff", 1)


def test_a_varint_longer_than_ten_bytes_is_refused_at_the_eleventh() -> None:
    """control's guarded deserializer walks the bytes of every request protobuf refused (a caller without a
    valid token too): 400 KB of continuation bytes held its event loop 8 s, the 4 MB limit about 14 min."""
    assert read_varint(b"\xff" * 9 + b"\x01", 0) == ((1 << 64) - 1, 10)
    with pytest.raises(IndexError, match="10 bytes"):
        read_varint(b"\xff" * 10 + b"\x01", 0)
    with pytest.raises(IndexError, match="10 bytes"):
        read_varint(b"\x08" + b"\xff" * 4_000_000 + b"\x01", 1)
