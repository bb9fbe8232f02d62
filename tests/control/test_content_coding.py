"""Which ``Accept-Encoding`` values admit gzip, and the gzip member the list body goes out as."""

from __future__ import annotations

import gzip

import pytest

from services.control.content_coding import accepts_gzip
from services.control.content_coding import gzip as compress


@pytest.mark.parametrize(("value", "expected"), [
    ("gzip", True),
    ("GZip", True),
    ("gzip, deflate", True),
    ("deflate, gzip;q=0.5", True),
    ("x-gzip", True),
    ("*", True),
    ("br;q=1.0, *;q=0.1", True),
    ("gzip ; q=1", True),
    ("gzip;Q=0.001", True),
    ("", False),
    ("identity", False),
    ("deflate, br", False),
    ("gzip;q=0", False),
    ("gzip;q=0.000", False),
    ("*;q=0", False),
    ("gzip;q=0, *", False),  # gzip refused by name: the wildcard does not bring it back
    ("*, gzip;q=0", False),
    ("gzip;q=0, x-gzip", True),  # an alias still admits it
    ("gzip;q=abc", False),  # a malformed weight refuses rather than guesses
    ("gzip;q=2", False),
    ("gzipx", False),
    (",,gzip,,", True),
])
def test_accepts_gzip(value: str, expected: bool) -> None:
    assert accepts_gzip(value) is expected


def test_the_body_is_one_gzip_member_that_inflates_to_itself() -> None:
    body = b'{"subscriptions":[' + b",".join(b'{"id":"sub_%d","label":"\xe2\x98\x82"}' % i for i in range(500)) + b"]}"
    packed = compress(body)
    assert packed[:2] == b"\x1f\x8b" and gzip.decompress(packed) == body and len(packed) < len(body) // 5
