"""The trade sink sends its script in full once per connection, and names it by its SHA1 after that."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis

from common.livefeed import LiveFeed
from common.retry import Backoff
from common.streams import LEADER_TRADES, DurableLog, create_stream_redis
from services.ingest.metrics import IngestMetrics
from services.ingest.sink import TradeSink
from tests.helpers import eventually
from tests.ingest.test_sink import Connections, read_all, trade

pytestmark = pytest.mark.integration


@pytest.fixture
async def sink_on(redis_url: str) -> AsyncIterator[tuple[TradeSink, DurableLog, Connections]]:
    client = create_stream_redis(redis_url)
    log = DurableLog(client, LEADER_TRADES, live=LiveFeed(), block_ms=100)
    await log.prime()
    conns = Connections(redis_url)
    sink = TradeSink(conns, log, IngestMetrics(), backoff=Backoff(0.01, 0.05))
    runner = asyncio.create_task(sink.run())
    await eventually(lambda: sink._conn is not None)
    try:
        yield sink, log, conns
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await client.aclose()


def _script_calls(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha")}


async def test_the_script_is_sent_in_full_once_per_connection(
        redis_url: str, sink_on: tuple[TradeSink, DurableLog, Connections]) -> None:
    sink, log, _conns = sink_on
    redis.Redis.from_url(redis_url).config_resetstat()
    for n in range(50):
        sink.put(trade(n))
    assert await asyncio.wait_for(read_all(log, 50), 10) == [f"lt_{n:08d}" for n in range(50)]
    assert _script_calls(redis_url) == {"eval": 1, "evalsha": 49}


async def test_a_flushed_script_cache_loses_and_doubles_no_trade(
        redis_url: str, sink_on: tuple[TradeSink, DurableLog, Connections]) -> None:
    """Redis forgets the script (SCRIPT FLUSH): the calls naming it are refused, and sent again on a new connection,
    whose first call sends it in full."""
    sink, log, conns = sink_on
    reader = asyncio.create_task(read_all(log, 60))
    for n in range(20):
        sink.put(trade(n))
    await eventually(lambda: sink.backlog == 0)
    redis.Redis.from_url(redis_url).script_flush()
    for n in range(20, 60):
        sink.put(trade(n))
    assert await asyncio.wait_for(reader, 10) == [f"lt_{n:08d}" for n in range(60)]
    await eventually(lambda: sink.backlog == 0)
    assert await log.redis.xlen(LEADER_TRADES) == 60
    assert len(conns.opened) == 2
