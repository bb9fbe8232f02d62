"""Fixtures for ingest tests: the simulated venue, an in-process ingest, hot-index helpers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from common import hotindex
from common.telemetry import setup_telemetry
from services.ingest.__main__ import Ingest
from services.ingest.config import IngestSettings
from sim.polymarket import PolymarketSim
from tests.helpers import INTERNAL, retuned, with_tuning
from tradingtools.control.v1 import subscription_pb2 as spb

# A receive time after every fixture's trade timestamp (trades stamped later than receipt + skew are refused).
RECV_NS = 1_790_000_000_000_000_000


def fast_settings(sim: PolymarketSim, **overrides: Any) -> IngestSettings:
    """Settings pointing at the simulator with short intervals for tests."""
    env = sim.env()
    base = with_tuning(
        IngestSettings, security=INTERNAL,
        rtds_url=env["TT_RTDS_URL"], clob_ws_url=env["TT_CLOB_WS_URL"], clob_api_url=env["TT_CLOB_API_URL"],
        data_api_url=env["TT_DATA_API_URL"], grpc_port=0, grpc_host="127.0.0.1",
        rtds_ping_interval_s=0.1, rtds_stall_s=0.6, reconnect_base_s=0.05, reconnect_cap_s=0.2,
        clob_ping_interval_s=0.2, clob_stall_s=5.0, book_stale_s=30.0, watch_refresh_s=0.3,
        poll_interval_s=3600.0, poll_gap_followup_s=0.3, poll_rate_per_s=200.0, poll_burst=50,
        index_check_s=0.2, http_timeout_s=5.0)
    return retuned(base, **overrides)


@pytest.fixture
async def sim() -> AsyncIterator[PolymarketSim]:
    venue = await PolymarketSim(seed=11).start()
    try:
        yield venue
    finally:
        await venue.stop()


IngestFactory = Callable[..., Awaitable[Ingest]]


@pytest.fixture
async def run_ingest(sim: PolymarketSim, redis_url: str, db_url: str) -> AsyncIterator[IngestFactory]:
    setup_telemetry("ingest-tests")  # a real tracer provider, so events carry a trace context
    started: list[Ingest] = []

    async def factory(**overrides: Any) -> Ingest:
        app = Ingest(fast_settings(sim, **overrides), redis_url, db_url)
        await app.start()
        started.append(app)
        return app

    try:
        yield factory
    finally:
        for app in started:
            await app.stop(grace_s=0.1)


def subscription(leader: str, sub_id: str = "sub_1", created_s: float | None = None) -> spb.Subscription:
    ts = Timestamp()
    ts.FromNanoseconds(int((created_s if created_s is not None else time.time() - 60) * 1e9))
    return spb.Subscription(id=sub_id, leader_proxy=leader, follower_proxy="0x" + "1" * 40,
                            state=spb.SUBSCRIPTION_STATE_ACTIVE, create_time=ts,
                            sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="10"))


async def follow(redis_url: str, leader: str, sub_id: str = "sub_1", created_s: float | None = None) -> None:
    """Put an ACTIVE subscription for ``leader`` in the hot index (as control does)."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await hotindex.upsert(client, subscription(leader, sub_id, created_s))
    finally:
        await client.aclose()


async def unfollow(redis_url: str, leader: str, sub_id: str = "sub_1") -> None:
    """Remove the subscription from the hot index."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await hotindex.remove(client, leader, sub_id)
    finally:
        await client.aclose()
