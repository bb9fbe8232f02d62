"""Identifiers: sortable, prefixed ids (``sub_01JD…``) and deterministic hash ids."""

from __future__ import annotations

import hashlib
import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None, entropy: bytes | None = None) -> str:
    """A 26-character ULID (48-bit ms time + 80 random bits), Crockford base32."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rnd = os.urandom(10) if entropy is None else entropy
    value = (ms << 80) | int.from_bytes(rnd, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A new prefixed id such as ``sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V``."""
    return f"{prefix}_{ulid(now_ms)}"


def hash_id(prefix: str, *parts: str, length: int = 32) -> str:
    """A deterministic prefixed id: sha256 of the parts joined by NUL, hex-truncated."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"{prefix}_{digest[:length]}"
