"""Reading the router's RoutedTrade log straight from Redis: one blocking ``XREAD`` per batch.

``RouterService.StreamRoutedTrades`` serves ``tt:stream:routed_trades`` as one gRPC message per
trade: the router parses and re-serializes each trade and both processes pay the gRPC machinery per
message, a good share of a single-order copy's CPU. This reader gets the same entries and cursors
(the stream's entry ids) on its own :class:`common.resp.RespConnection`; the blocking ``XREAD`` wakes
as soon as the router appends and returns everything appended since the last read. An entry whose
payload does not parse is logged, counted and skipped (it could never be handled).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError

from common.resp import RespConnection
from common.streams import DurableLog
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

OpenRouted = Callable[[str], AsyncIterator[tuple[str, epb.RoutedTrade]]]


class MalformedCounter:
    """Entries skipped because their payload did not parse."""

    def __init__(self) -> None:
        self.skipped = 0


def routed_trade_stream(log_: DurableLog, redis_url: str, *, batch: int = 256, block_ms: int = 1000,
                        malformed: MalformedCounter | None = None) -> OpenRouted:
    """``open_stream(after_cursor)`` over the routed-trade log: ``(cursor, RoutedTrade)`` in log order."""
    name = log_.name.encode()
    count, block = str(batch).encode(), str(block_ms).encode()
    reply_timeout_s = block_ms / 1000 + 5.0
    parse = epb.RoutedTrade.FromString
    counter = malformed or MalformedCounter()

    async def open_stream(after: str) -> AsyncIterator[tuple[str, epb.RoutedTrade]]:
        cursor = await log_.resolve(after)
        conn = await RespConnection.open(redis_url, connect_timeout_s=5.0)
        try:
            while True:
                reply = await conn.call(b"XREAD", b"COUNT", count, b"BLOCK", block, b"STREAMS", name,
                                        cursor.encode(), timeout_s=reply_timeout_s)
                if not reply:  # nil: nothing new within block_ms
                    continue
                for entry_id, fields in reply[0][1]:
                    cursor = _text(entry_id)
                    payload = _payload(fields)
                    try:
                        if payload is None:
                            raise DecodeError("no 'p' field")
                        routed = parse(payload)
                    except DecodeError as exc:
                        counter.skipped += 1
                        log.warning("malformed routed trade skipped", extra={"entry": cursor, "error": str(exc)})
                        continue
                    yield cursor, routed
        finally:
            conn.close()

    return open_stream


def _payload(fields: list[Any]) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"p":
            return bytes(fields[i + 1])
    return None


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
