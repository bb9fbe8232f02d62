"""The two tick sources, each an ``open_stream(after_cursor)`` of tick batches: ingest's PriceTick log read
straight from Redis, a batch per blocking ``XREAD`` (:func:`common.logread.read_raw_entries`), or
``IngestService.StreamPriceTicks`` over gRPC.

One Python gRPC stream tops out near 7,000 messages/s on this machine, below the tick rate guard
must follow, so guard takes ingest's tick log from Redis in batches instead of one message per tick;
the ticks and cursors are those ``IngestService.StreamPriceTicks`` serves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from common.logread import entry_cursor, entry_payload, read_raw_entries
from common.streams import DurableLog
from services.guard.ports import OpenTicks, TickBatch
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

log = logging.getLogger(__name__)


def parse_entries(entries: list[Any]) -> TickBatch:
    """XREAD entries ``[[id, [field, value, ...]], ...]`` → (last id, parsed ticks); an entry without a
    ``p`` field or whose payload does not parse is logged and skipped (the cursor still moves past it)."""
    ticks: list[mpb.PriceTick] = []
    parse = mpb.PriceTick.FromString
    for _entry_id, fields in entries:
        payload = entry_payload(fields)
        try:
            if payload is None:
                raise DecodeError("no 'p' field")
            ticks.append(parse(payload))
        except DecodeError as exc:
            log.warning("malformed price tick entry skipped",
                        extra={"entry": entry_cursor(_entry_id), "error": str(exc)})
    return entry_cursor(entries[-1][0]), ticks


async def log_end(log_: DurableLog) -> tuple[str, int]:
    """The cursor of the log's newest entry and the ``received_time_ns`` of its newest tick of ingest's gate that
    parses (the gate stamps its ticks in increasing order: every one up to the cursor is stamped at most that; a
    MARKET_RESOLVED tick ingest's resolution recorder appends is stamped when the resolution arrived, maybe after
    gate ticks still queued, which land after the cursor); ("0-0", 0) when the log is empty, 0 when none of its
    newest entries is such a tick."""
    rows = await log_.redis.xrevrange(log_.name, count=16)
    if not rows:
        return "0-0", 0
    for _entry_id, fields in rows:
        payload = fields.get(b"p") if isinstance(fields, dict) else entry_payload(list(fields or ()))
        if isinstance(payload, bytes):
            try:
                tick = mpb.PriceTick.FromString(payload)
            except DecodeError:
                continue
            if tick.kind != mpb.TICK_KIND_MARKET_RESOLVED:
                return entry_cursor(rows[0][0]), int(tick.received_time_ns)
    return entry_cursor(rows[0][0]), 0


def log_tick_stream(log_: DurableLog, *, batch: int = 1024, block_ms: int = 1000,
                    min_interval_s: float = 0.0) -> OpenTicks:
    """The PRICE_TICKS durable log as an ``open_stream(after_cursor)`` yielding batches of ticks."""
    open_entries = read_raw_entries(log_, batch=batch, block_ms=block_ms, min_interval_s=min_interval_s)

    async def open_stream(after: str) -> AsyncIterator[TickBatch]:
        async for entries in open_entries(after):
            yield parse_entries(entries)

    return open_stream


def tick_stream(channel: grpc.aio.Channel, consumer: str) -> OpenTicks:
    """``IngestService.StreamPriceTicks`` as an ``open_stream(after_cursor)`` (batches of one tick)."""
    stub = mgrpc.IngestServiceStub(channel)

    async def open_stream(after: str) -> AsyncIterator[TickBatch]:
        async for resp in stub.StreamPriceTicks(mpb.StreamPriceTicksRequest(after_cursor=after, consumer=consumer)):
            yield resp.cursor, [resp.tick]

    return open_stream
