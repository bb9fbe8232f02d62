"""gRPC IngestService: thin adapters from the durable logs to server streams."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from redis.exceptions import RedisError

from common.streams import DurableLog, serve_log
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

log = logging.getLogger(__name__)
SERVICE_NAME = mpb.DESCRIPTOR.services_by_name["IngestService"].full_name
T = TypeVar("T")
_CURSOR = re.compile(r"^(|0|\d{1,20}(-\d{1,20})?)$")


class InvalidCursor(ValueError):
    """A resume cursor that is not a stream entry id."""


def check_cursor(cursor: str) -> str:
    """A cursor the log accepts: "" (new only), "0" (oldest kept) or an entry id ``ms-seq``."""
    if not _CURSOR.match(cursor):
        raise InvalidCursor(f"after_cursor must be '', '0' or an entry id like '1700000000000-0', got {cursor!r}")
    return cursor


async def abort_for(context: Any, exc: BaseException) -> None:
    """The one mapping of domain errors to gRPC status."""
    if isinstance(exc, InvalidCursor):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, RedisError | OSError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "event log unavailable")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class IngestServicer(mgrpc.IngestServiceServicer):
    """Streams leader trades, price ticks and market resolutions from their Redis Stream logs."""

    def __init__(self, trades: DurableLog, ticks: DurableLog, resolutions: DurableLog) -> None:
        self.trades = trades
        self.ticks = ticks
        self.resolutions = resolutions

    async def StreamLeaderTrades(
            self, request: mpb.StreamLeaderTradesRequest, context: Any,
    ) -> AsyncIterator[mpb.StreamLeaderTradesResponse]:
        """Leader trades after ``after_cursor``, forever."""
        def build(cursor: str, payload: bytes) -> mpb.StreamLeaderTradesResponse:
            return mpb.StreamLeaderTradesResponse(cursor=cursor, event=mpb.LeaderTradeEvent.FromString(payload))

        async for item in _stream(self.trades, request, context, build, "leader trade"):
            yield item

    async def StreamPriceTicks(
            self, request: mpb.StreamPriceTicksRequest, context: Any,
    ) -> AsyncIterator[mpb.StreamPriceTicksResponse]:
        """Price ticks after ``after_cursor`` (only ``asset_ids`` when given), forever."""
        wanted = frozenset(request.asset_ids)

        def build(cursor: str, payload: bytes) -> mpb.StreamPriceTicksResponse:
            return mpb.StreamPriceTicksResponse(cursor=cursor, tick=mpb.PriceTick.FromString(payload))

        async for item in _stream(self.ticks, request, context, build, "price tick"):
            if not wanted or item.tick.asset_id in wanted:
                yield item

    async def StreamMarketResolutions(
            self, request: mpb.StreamMarketResolutionsRequest, context: Any,
    ) -> AsyncIterator[mpb.StreamMarketResolutionsResponse]:
        """Market resolutions after ``after_cursor``, forever."""
        def build(cursor: str, payload: bytes) -> mpb.StreamMarketResolutionsResponse:
            return mpb.StreamMarketResolutionsResponse(cursor=cursor,
                                                       resolution=mpb.MarketResolution.FromString(payload))

        async for item in _stream(self.resolutions, request, context, build, "market resolution"):
            yield item


async def _stream(log_: DurableLog, request: Any, context: Any, build: Callable[[str, bytes], T],
                  what: str) -> AsyncIterator[T]:
    """``serve_log`` for one RPC: the request's cursor checked, ends when the client is gone, errors mapped."""
    try:
        async for item in serve_log(log_, check_cursor(request.after_cursor), build):
            if context.done():
                return
            yield item
    except Exception as exc:  # noqa: BLE001 - mapped to a status
        if not isinstance(exc, InvalidCursor):
            log.warning(f"{what} stream failed", extra={"consumer": request.consumer, "error": repr(exc)})
        await abort_for(context, exc)
