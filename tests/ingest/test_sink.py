"""The trade sink on real Redis: dedupe + append in log order, and no loss or double across a lost connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from common.livefeed import LiveFeed
from common.resp import RespConnection
from common.retry import Backoff
from common.streams import LEADER_TRADES, DurableLog, create_stream_redis
from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics
from services.ingest.model import Fill
from services.ingest.sink import TradeSink
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


def trade(n: int) -> Identified:
    fill = Fill(tx_hash=f"0x{n:064x}", wallet="0x" + "a" * 40, asset_id=str(10**70 + n), condition_id="0x" + "c" * 64,
                side="BUY", price=Decimal("0.5"), size=Decimal(n + 1), usdc_size=None, fee=None, outcome="Yes",
                outcome_index=0, market_slug="m", event_slug="e", title="t", activity_type="TRADE",
                source="rtds_trades", venue_time_ms=1_700_000_000_000 + n, received_ns=1)
    return Identified(fill, f"lt_{n:08d}", 0)


class Connections:
    """Opens real connections and remembers them, so a test can cut one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[RespConnection] = []

    async def __call__(self) -> RespConnection:
        conn = await RespConnection.open(self.url)
        self.opened.append(conn)
        return conn


@pytest.fixture
async def setup(redis_url: str) -> AsyncIterator[tuple[TradeSink, DurableLog, Connections, IngestMetrics]]:
    redis = create_stream_redis(redis_url)
    log = DurableLog(redis, LEADER_TRADES, live=LiveFeed(), block_ms=100)
    await log.prime()
    conns = Connections(redis_url)
    metrics = IngestMetrics()
    sink = TradeSink(conns, log, metrics, backoff=Backoff(0.01, 0.05))
    runner = asyncio.create_task(sink.run())
    await eventually(lambda: sink._conn is not None)
    try:
        yield sink, log, conns, metrics
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await redis.aclose()


async def read_all(log: DurableLog, n: int) -> list[str]:
    """The trade ids a live reader of the log sees, for the first ``n`` entries."""
    ids: list[str] = []
    async for _cursor, payload in log.tail("0"):
        ids.append(mpb.LeaderTradeEvent.FromString(payload).id)
        if len(ids) == n:
            return ids
    return ids


async def test_put_appends_once_in_order_and_dedupes(setup: tuple[TradeSink, DurableLog, Connections,
                                                                    IngestMetrics]) -> None:
    sink, log, _conns, metrics = setup
    for n in range(50):
        sink.put(trade(n))
    sink.put(trade(3))  # the same trade again (the other feed): not appended
    assert await sink.submit([trade(7), trade(50)]) == [None, await _cursor_of(log, "lt_00000050")]
    ids = await asyncio.wait_for(read_all(log, 51), 5)
    assert ids == [f"lt_{n:08d}" for n in range(51)]
    assert await log.redis.xlen(LEADER_TRADES) == 51
    assert metrics.total("duplicate") == 2 and metrics.total("kept") == 51


async def _cursor_of(log: DurableLog, trade_id: str) -> str:
    rows: Any = await log.redis.xrange(LEADER_TRADES)
    for cursor, fields in rows:
        if mpb.LeaderTradeEvent.FromString(fields[b"p"]).id == trade_id:
            return cursor.decode()
    raise AssertionError(trade_id)


async def test_a_cut_connection_loses_nothing_and_doubles_nothing(
        setup: tuple[TradeSink, DurableLog, Connections, IngestMetrics]) -> None:
    sink, log, conns, _metrics = setup
    reader = asyncio.create_task(read_all(log, 300))
    for n in range(100):
        sink.put(trade(n))
    await eventually(lambda: sink.backlog == 0)
    for n in range(100, 200):
        sink.put(trade(n))
    conns.opened[-1].close()  # written, unanswered: Redis may or may not have applied them
    for n in range(200, 300):
        sink.put(trade(n))  # queued while the sink reconnects
    ids = await asyncio.wait_for(reader, 10)
    assert ids == [f"lt_{n:08d}" for n in range(300)]
    assert await log.redis.xlen(LEADER_TRADES) == 300
    assert sink.recoveries == 1 and len(conns.opened) == 2


async def test_an_error_reply_recycles_the_connection_and_the_trade_goes_through_later(
        setup: tuple[TradeSink, DurableLog, Connections, IngestMetrics]) -> None:
    sink, log, conns, _metrics = setup
    sink.put(trade(0))
    await eventually(lambda: sink.backlog == 0)
    await log.redis.delete(LEADER_TRADES)
    await log.redis.set(LEADER_TRADES, "not a stream")  # XADD now fails with WRONGTYPE, before anything is written
    sink.put(trade(1))
    await eventually(lambda: len(conns.opened) >= 3)  # refused, reconnected, refused again
    assert sink.backlog == 1
    await log.redis.delete(LEADER_TRADES)
    await eventually(lambda: sink.backlog == 0)
    rows: Any = await log.redis.xrange(LEADER_TRADES)
    assert [mpb.LeaderTradeEvent.FromString(f[b"p"]).id for _c, f in rows] == ["lt_00000001"]
