"""The leader-trade log copied into PostgreSQL (real PostgreSQL and Redis)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from common.consumer import RedisCursorStore
from common.storage import create_pool, create_redis
from common.streams import LEADER_TRADES, DurableLog, create_stream_redis
from services.ingest.persist import CHUNK, TradeWriter
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


def _event(i: int, *, fee: str = "") -> mpb.LeaderTradeEvent:
    return mpb.LeaderTradeEvent(
        id=f"lt_{i}", tx_hash="0x" + "ab" * 32, wallet="0x" + "cd" * 20, asset_id="5034" + "7" * 70,
        condition_id="0x" + "ef" * 32, side=cpb.SIDE_SELL if i % 2 else cpb.SIDE_BUY, price="0.515",
        size="12.5", notional_usd="6.4375", fee=fee, outcome="Yes", outcome_index=1, market_slug="m",
        event_slug="e", title="T", activity_type=mpb.ACTIVITY_TYPE_TRADE, source=mpb.FEED_SOURCE_DATA_API,
        occurrence=i, venue_time_ms=1_763_800_000_123, received_time_ns=1_763_800_000_456_000_000)


async def test_writer_copies_every_field_once_across_chunks(db_url: str, redis_url: str) -> None:
    r = create_stream_redis(redis_url)
    text = create_redis(redis_url)
    log_ = DurableLog(r, LEADER_TRADES)
    n = CHUNK + 7
    cursors = await log_.append_many([_event(i, fee="0.01" if i == 0 else "").SerializeToString() for i in range(n)])
    pool = await create_pool(db_url, min_size=1, max_size=2)
    writer = TradeWriter(log_, pool, RedisCursorStore(text), batch=500)
    assert await writer.step(block_ms=0) == n
    await log_.append(_event(0).SerializeToString())  # seen again (a replay): not doubled
    assert await writer.step(block_ms=0) == 1
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT id, side, price, size, notional_usd, fee, outcome_index, activity_type, source,"
                            " occurrence, venue_time, received_time_ns, stream_cursor FROM leader_trades"
                            " ORDER BY occurrence").fetchall()
    assert len(rows) == n
    assert rows[0] == ("lt_0", "BUY", Decimal("0.515"), Decimal("12.5"), Decimal("6.4375"), Decimal("0.01"), 1,
                       "TRADE", "DATA_API", 0, datetime(2025, 11, 22, 8, 26, 40, 123000, tzinfo=UTC),
                       1_763_800_000_456_000_000, cursors[0])
    assert rows[1][1] == "SELL" and rows[1][5] is None and rows[-1][12] == cursors[-1]
    assert await text.get("tt:cursor:ingest-pg") is not None
    await pool.close()
    await r.aclose()
    await text.aclose()
