"""Reading ingest's durable logs in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from common.streams import LEADER_TRADES, PRICE_TICKS
from tests.helpers import internal_channel
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


async def logged_trades(redis_url: str) -> list[mpb.LeaderTradeEvent]:
    """Every event in the leader-trade log, in order."""
    client = aioredis.from_url(redis_url)
    try:
        return [mpb.LeaderTradeEvent.FromString(f[b"p"]) for _, f in await client.xrange(LEADER_TRADES)]
    finally:
        await client.aclose()


async def logged_ticks(redis_url: str) -> list[mpb.PriceTick]:
    """Every tick in the price-tick log, in order."""
    client = aioredis.from_url(redis_url)
    try:
        return [mpb.PriceTick.FromString(f[b"p"]) for _, f in await client.xrange(PRICE_TICKS)]
    finally:
        await client.aclose()


async def grpc_trades(port: int, after: str = "0") -> AsyncIterator[tuple[str, mpb.LeaderTradeEvent]]:
    """StreamLeaderTrades from ``after``."""
    async with internal_channel(port) as channel:
        stub = mgrpc.IngestServiceStub(channel)
        async for resp in stub.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(after_cursor=after, consumer="t")):
            yield resp.cursor, resp.event
