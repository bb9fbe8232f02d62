"""Helpers of the resolution tests: held positions, the resolution log and table, a log whose append fails."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg.rows import dict_row

from common.marketstate import WATCH_CHANNEL, WATCH_POSITIONS, read_market
from common.streams import MARKET_RESOLUTIONS, DurableLog
from tests.helpers import internal_channel
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


async def hold(db_url: str, condition_id: str, asset_id: str, wallet_id: str = "fw_1", size: str = "10") -> None:
    """An OPEN position in the market, as the executor books it."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd)"
            " VALUES (%s, %s, %s, %s, %s, 0.5, %s)",
            (wallet_id, asset_id, condition_id, "0x" + "1" * 40, Decimal(size), Decimal(size) / 2))


async def rows(db_url: str, table: str) -> list[dict[str, Any]]:
    """Every row of ``market_resolutions`` or ``market_checks``."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return await (await conn.execute(f"SELECT * FROM {table} ORDER BY condition_id")).fetchall()


async def logged(redis_url: str) -> list[tuple[str, mpb.MarketResolution]]:
    """Every entry of the resolution log, in order."""
    client = aioredis.from_url(redis_url)
    try:
        return [(i.decode(), mpb.MarketResolution.FromString(f[b"p"]))
                for i, f in await client.xrange(MARKET_RESOLUTIONS)]
    finally:
        await client.aclose()


async def served(port: int, n: int, after: str = "0") -> list[mpb.StreamMarketResolutionsResponse]:
    """The first ``n`` items of ``StreamMarketResolutions`` from ``after``."""
    out: list[mpb.StreamMarketResolutionsResponse] = []
    async with internal_channel(port) as channel:
        stub = mgrpc.IngestServiceStub(channel)
        call = stub.StreamMarketResolutions(mpb.StreamMarketResolutionsRequest(after_cursor=after, consumer="test"))
        async for item in call:
            out.append(item)
            if len(out) == n:
                call.cancel()
                break
    return out


async def watch(r: aioredis.Redis, *assets: str) -> None:
    await r.sadd(WATCH_POSITIONS, *assets)
    await r.publish(WATCH_CHANNEL, WATCH_POSITIONS)


async def market_known(r: aioredis.Redis, asset_id: str, condition_id: str) -> bool:
    """Ingest cached the market's info (from CLOB REST) for the asset."""
    info = await read_market(r, asset_id)
    return info is not None and info.condition_id == condition_id


class AppendFails:
    """The resolution log as a crash sees it: every append fails, before (or, ``after_xadd``, after) Redis has
    the entry."""

    def __init__(self, real: DurableLog, *, after_xadd: bool = False) -> None:
        self.real = real
        self.name = real.name
        self.redis = real.redis
        self.after_xadd = after_xadd
        self.calls = 0

    async def append(self, payload: bytes) -> str:
        self.calls += 1
        if self.after_xadd:
            await self.real.append(payload)
        await asyncio.sleep(0)
        raise ConnectionError("simulated crash around the append")
