"""Websocket frame decoding shared by both feeds: keep-alives, JSON objects and JSON arrays."""

from __future__ import annotations

from typing import Any

import orjson

from services.ingest.model import BAD_SHAPE, NOT_JSON, TOO_LARGE, ParseError

# Texts that are keep-alives, not data: RTDS answers a ping with an empty frame, CLOB with PONG.
KEEPALIVES = frozenset({"", "PONG", "PING", "pong", "ping"})


def decode(raw: str | bytes, max_bytes: int = 1_048_576) -> list[Any] | None:
    """The messages in one frame (a JSON object or array), or None for a keep-alive.

    Raises ParseError for an oversized, non-JSON or non-object/array frame. Array elements are
    returned as they are: the caller rejects the ones that are not objects, one by one.
    """
    if len(raw) > max_bytes:
        raise ParseError(TOO_LARGE, f"{len(raw)} bytes")
    if len(raw) <= 8:
        short = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if short.strip() in KEEPALIVES:
            return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not raw.strip():
            return None
        raise ParseError(NOT_JSON, str(exc)[:200]) from None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return data
    raise ParseError(BAD_SHAPE, f"top level is {type(data).__name__}")


def require_object(item: Any) -> dict[str, Any]:
    """An array element that must be a JSON object."""
    if not isinstance(item, dict):
        raise ParseError(BAD_SHAPE, f"element is {type(item).__name__}")
    return item
