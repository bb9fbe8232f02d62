"""Reading durable logs (ingest's PriceTicks, the executor's OrderEvents): one blocking ``XREAD`` per batch
on a dedicated connection.

redis-py costs ~100 µs of CPU per command here (pool, retry, packing, callbacks), and a reader
that keeps up with the log gets small batches (one per ingest flush), so that cost was paid
thousands of times a second. This adapter reads on its own :class:`common.resp.RespConnection`
(~30 µs per round trip); the blocking XREAD wakes once per ingest flush and returns all of it.
Connections that are not plain TCP (TLS, unix socket) read through redis-py instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.message import DecodeError
from redis.asyncio.connection import Connection

from common.resp import RespConnection
from common.streams import DurableLog
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)

TickBatch = tuple[str, list[mpb.PriceTick]]  # (cursor after the batch, its ticks in log order)
OpenTicks = Callable[[str], AsyncIterator[TickBatch]]


def parse_entries(entries: list[Any]) -> TickBatch:
    """XREAD entries ``[[id, [field, value, ...]], ...]`` → (last id, parsed ticks); an entry without a
    ``p`` field or whose payload does not parse is logged and skipped (the cursor still moves past it)."""
    ticks: list[mpb.PriceTick] = []
    parse = mpb.PriceTick.FromString
    for _entry_id, fields in entries:
        payload = fields[1] if fields and fields[0] == b"p" else _field(fields)
        try:
            if payload is None:
                raise DecodeError("no 'p' field")
            ticks.append(parse(payload))
        except DecodeError as exc:
            log.warning("malformed price tick entry skipped", extra={"entry": _text(_entry_id), "error": str(exc)})
    return _text(entries[-1][0]), ticks


def _field(fields: list[Any]) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"p":
            return bytes(fields[i + 1])
    return None


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def read_entries(log_: DurableLog, *, batch: int = 1024, block_ms: int = 1000,
                 min_interval_s: float = 0.0) -> Callable[[str], AsyncIterator[list[Any]]]:
    """A durable log as ``open(after_cursor)`` yielding raw XREAD entries ``[[id, [field, value, ...]], ...]``,
    one list per read (every entry appended since the previous read, up to ``batch``).

    ``min_interval_s`` > 0: a read that returned less than a full batch is followed by the next one no
    sooner than that long after it started, so under load entries gather into fewer, larger batches
    (a lone entry after a quiet spell is read at once)."""
    pool = log_.redis.connection_pool
    kwargs = pool.connection_kwargs
    plain_tcp = pool.connection_class is Connection and "host" in kwargs
    name = log_.name.encode()
    count, block = str(batch).encode(), str(block_ms).encode()
    reply_timeout_s = block_ms / 1000 + 5.0

    async def pause(started: float, got: int) -> None:
        if min_interval_s > 0 and got < batch:
            wait_s = started + min_interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)

    async def open_entries(after: str) -> AsyncIterator[list[Any]]:
        cursor = await log_.resolve(after)
        if not plain_tcp:
            while True:
                started = time.monotonic()
                items = await log_.read(cursor, count=batch, block_ms=block_ms)
                if items:
                    cursor = items[-1][0]
                    yield [[c, [b"p", p]] for c, p in items]
                    await pause(started, len(items))
        conn = await RespConnection.open_tcp(kwargs["host"], int(kwargs.get("port") or 6379),
                                             username=kwargs.get("username"), password=kwargs.get("password"),
                                             db=int(kwargs.get("db") or 0), connect_timeout_s=5.0)
        try:
            while True:
                started = time.monotonic()
                reply = await conn.call(b"XREAD", b"COUNT", count, b"BLOCK", block, b"STREAMS", name,
                                        cursor.encode(), timeout_s=reply_timeout_s)
                if not reply:  # nil: nothing new within block_ms
                    continue
                entries = reply[0][1]
                if entries:
                    cursor = _text(entries[-1][0])
                    yield entries
                    await pause(started, len(entries))
        finally:
            conn.close()

    return open_entries


def log_tick_stream(log_: DurableLog, *, batch: int = 1024, block_ms: int = 1000,
                    min_interval_s: float = 0.0) -> OpenTicks:
    """The PRICE_TICKS durable log as an ``open_stream(after_cursor)`` yielding batches.

    Same ticks and cursors as ``IngestService.StreamPriceTicks``, without a message per tick (one Python
    gRPC stream tops out near 7,000 messages/s on this machine).
    """
    open_entries = read_entries(log_, batch=batch, block_ms=block_ms, min_interval_s=min_interval_s)

    async def open_stream(after: str) -> AsyncIterator[TickBatch]:
        async for entries in open_entries(after):
            yield parse_entries(entries)

    return open_stream


def log_order_stream(log_: DurableLog, *, batch: int = 256, block_ms: int = 1000, min_interval_s: float = 0.0
                     ) -> Callable[[str], AsyncIterator[tuple[str, epb.OrderEvent]]]:
    """The ORDER_EVENTS durable log as an ``open_stream(after_cursor)`` of ``(cursor, event)``: the same
    items and cursors as ``ExecutorService.StreamOrderEvents``, read a batch per round trip (see
    :func:`read_entries` for ``min_interval_s``). An entry that does not parse is logged and skipped."""
    open_entries = read_entries(log_, batch=batch, block_ms=block_ms, min_interval_s=min_interval_s)
    parse = epb.OrderEvent.FromString

    async def open_stream(after: str) -> AsyncIterator[tuple[str, epb.OrderEvent]]:
        async for entries in open_entries(after):
            for entry_id, fields in entries:
                payload = fields[1] if fields and fields[0] == b"p" else _field(fields)
                try:
                    if payload is None:
                        raise DecodeError("no 'p' field")
                    event = parse(payload)
                except DecodeError as exc:
                    log.warning("malformed order event entry skipped",
                                extra={"entry": _text(entry_id), "error": str(exc)})
                    continue
                yield _text(entry_id), event

    return open_stream
