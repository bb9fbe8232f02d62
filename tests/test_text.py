"""common.text.storable: what PostgreSQL text cannot hold is dropped or replaced, nothing else changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.text import storable


@pytest.mark.parametrize(("raw", "stored"), [
    ("Will it rain?", "Will it rain?"),
    ("", ""),
    ("Yes\x00", "Yes"),
    ("\x00\x00", ""),
    ("Oui – ça ira", "Oui – ça ira"),
    ("bad \ud800 surrogate", "bad ? surrogate"),
    ("both\x00\udfff", "both?"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
])
def test_storable(raw: str, stored: str) -> None:
    assert storable(raw) == stored


@given(st.text())
def test_storable_text_encodes_and_holds_no_nul(raw: str) -> None:
    out = storable(raw)
    out.encode("utf-8")
    assert "\x00" not in out
    assert len(out) == len(raw) - raw.count("\x00")
