"""Free text from outside (feed titles, venue messages) made storable as PostgreSQL ``text``."""

from __future__ import annotations


def storable(value: str) -> str:
    """``value`` without NUL characters (PostgreSQL text cannot hold them) and with lone surrogates replaced
    (they cannot be encoded as UTF-8): one such character must not make a row unwritable forever."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value
