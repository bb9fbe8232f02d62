"""gRPC IngestService: thin adapters from the durable logs to server streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from common.logserve import stream_log
from common.streams import DurableLog
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

SERVICE_NAME = mpb.DESCRIPTOR.services_by_name["IngestService"].full_name


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
        async for item in stream_log(context, self.trades, request.after_cursor, request.consumer, trade_entry):
            yield item

    async def StreamPriceTicks(
            self, request: mpb.StreamPriceTicksRequest, context: Any,
    ) -> AsyncIterator[mpb.StreamPriceTicksResponse]:
        """Price ticks after ``after_cursor`` (only ``asset_ids`` when given), forever."""
        wanted = frozenset(request.asset_ids)
        keep = (lambda item: item.tick.asset_id in wanted) if wanted else None
        async for item in stream_log(context, self.ticks, request.after_cursor, request.consumer, tick_entry, keep):
            yield item

    async def StreamMarketResolutions(
            self, request: mpb.StreamMarketResolutionsRequest, context: Any,
    ) -> AsyncIterator[mpb.StreamMarketResolutionsResponse]:
        """Market resolutions after ``after_cursor``, forever."""
        async for item in stream_log(context, self.resolutions, request.after_cursor, request.consumer,
                                     resolution_entry):
            yield item


def resolution_entry(cursor: str, payload: bytes) -> mpb.StreamMarketResolutionsResponse:
    """One entry of the market-resolution log as a stream response."""
    return mpb.StreamMarketResolutionsResponse(cursor=cursor, resolution=mpb.MarketResolution.FromString(payload))


def trade_entry(cursor: str, payload: bytes) -> mpb.StreamLeaderTradesResponse:
    """One entry of the leader-trade log as a stream response."""
    return mpb.StreamLeaderTradesResponse(cursor=cursor, event=mpb.LeaderTradeEvent.FromString(payload))


def tick_entry(cursor: str, payload: bytes) -> mpb.StreamPriceTicksResponse:
    """One entry of the price-tick log as a stream response."""
    return mpb.StreamPriceTicksResponse(cursor=cursor, tick=mpb.PriceTick.FromString(payload))
