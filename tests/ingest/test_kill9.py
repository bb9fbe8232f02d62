"""kill -9 the ingest process mid-stream and restart it: a downstream consumer sees every event once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from common.consumer import RedisCursorStore, ResumableConsumer
from common.embedded import free_port
from common.retry import Backoff
from common.streams import START_OLDEST
from sim.polymarket import PolymarketSim
from tests.helpers import INTERNAL_ENV, eventually, internal_channel
from tests.ingest.conftest import follow
from tests.ingest.streamutil import logged_trades
from tests.ingest.test_service import expected_id
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LEADER = "0x" + "ab" * 20


def start_ingest(sim: PolymarketSim, redis_url: str, db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **INTERNAL_ENV, **sim.env(), "REDIS_URL": redis_url, "DATABASE_URL": db_url,
           "TT_INGEST_GRPC_PORT": str(port), "TT_INGEST_GRPC_HOST": "127.0.0.1",
           "TT_TUNE_INGEST_POLL_INTERVAL_S": "0.5", "TT_TUNE_INGEST_POLL_RATE_PER_S": "200",
           "TT_TUNE_INGEST_POLL_BURST": "50",
           "TT_TUNE_INGEST_RTDS_STALL_S": "2", "TT_TUNE_INGEST_RTDS_PING_INTERVAL_S": "0.5",
           "TT_TUNE_INGEST_RECONNECT_BASE_S": "0.05", "TT_TUNE_INGEST_RECONNECT_CAP_S": "0.3",
           "TT_TUNE_INGEST_CLOB_ENABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    return subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_kill_9_and_restart_loses_and_doubles_nothing(sim: PolymarketSim, redis_url: str,
                                                           db_url: str) -> None:
    await follow(redis_url, LEADER, created_s=time.time() - 60)
    port = free_port()
    market = sim.add_market()
    proc = start_ingest(sim, redis_url, db_url, port)
    seen: list[str] = []

    async def open_stream(after: str) -> AsyncIterator[tuple[str, mpb.LeaderTradeEvent]]:
        async with internal_channel(port) as channel:
            stub = mgrpc.IngestServiceStub(channel)
            async for resp in stub.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(after_cursor=after,
                                                                                     consumer="kill9")):
                yield resp.cursor, resp.event

    async def handle(event: mpb.LeaderTradeEvent) -> None:
        seen.append(event.id)

    r = aioredis.from_url(redis_url)
    consumer = ResumableConsumer("kill9-test", open_stream, handle, RedisCursorStore(r), start=START_OLDEST,
                                 backoff=Backoff(0.05, 0.3))
    consumer_task = asyncio.create_task(consumer.run())
    trades = []

    async def publish(n: int) -> None:
        for i in range(n):  # steady flow; while ingest is down RTDS drops them, data-api keeps them
            trades.append(sim.trade(LEADER, market=market, size=str(i + 1)))
            await asyncio.sleep(0.01)

    publisher: asyncio.Task[None] | None = None
    try:
        await sim.rtds.wait_subscribed(timeout_s=30)
        publisher = asyncio.create_task(publish(200))
        await eventually(lambda: len(seen) >= 30, timeout_s=20)
        proc.send_signal(signal.SIGKILL)  # mid-stream
        await asyncio.to_thread(proc.wait, 10)
        proc = start_ingest(sim, redis_url, db_url, port)
        await publisher
        expected = {expected_id(t) for t in trades}
        await eventually(lambda: set(seen) == expected, timeout_s=30, message="consumer saw every trade")
        assert Counter(seen).most_common(1)[0][1] == 1, "a trade was delivered twice"
        assert len(seen) == len(expected) == 200
        logged = [e.id for e in await logged_trades(redis_url)]
        assert sorted(logged) == sorted(expected)
        assert consumer.stats.reconnects >= 1
    finally:
        if publisher is not None:
            publisher.cancel()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        consumer_task.cancel()
        for _ in range(20):
            if consumer_task.done():
                break
            consumer_task.cancel()
            await asyncio.wait({consumer_task}, timeout=0.25)
        await r.aclose()
