"""Feed text PostgreSQL cannot store (NUL, lone surrogates) never stalls the leader-trade writer."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from common.consumer import RedisCursorStore
from common.storage import create_pool
from common.streams import LEADER_TRADES, DurableLog, create_stream_redis
from services.ingest.persist import TradeWriter
from tests.router.conftest import leader_trade

pytestmark = pytest.mark.integration


async def test_ingest_pg_writer_is_not_stalled_forever_by_one_unstorable_trade(db_url: str, redis_url: str) -> None:
    """ingest's parser accepts any string for title / slug / outcome (services/ingest/model.py:text), so a feed
    row whose title holds a NUL is appended to the leader-trade log. PostgreSQL text cannot store it. That one
    entry must not stop every later leader trade from ever reaching ``leader_trades`` (a poison entry is
    skipped or dead-lettered, as ResumableConsumer does, instead of retried forever from the saved cursor)."""
    pool = await create_pool(db_url, min_size=1, max_size=2)
    r = aioredis.from_url(redis_url)
    sr = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(sr, LEADER_TRADES)
        bad = leader_trade("lt_bad")
        bad.title = "Will it rain?\x00"
        await log_.append(bad.SerializeToString())
        await log_.append(leader_trade("lt_good").SerializeToString())
        writer = TradeWriter(log_, pool, RedisCursorStore(r), linger_s=0.05)
        task = asyncio.create_task(writer.run())
        try:
            await asyncio.sleep(3)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with pool.connection() as conn:
            ids = {row["id"] for row in await (await conn.execute("SELECT id FROM leader_trades")).fetchall()}
        assert "lt_good" in ids, f"leader_trades holds {sorted(ids)}; writer cursor {writer.cursor!r}"
    finally:
        await pool.close()
        await r.aclose()
        await sr.aclose()
