"""Fixtures: stand-ins for guard's upstreams and an in-process guard on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from common.config import Secret, StorageSettings
from common.fastredis import FastRedis
from common.storage import create_pool, create_redis
from services.control.app import RunningControl
from services.control.app import start as start_control
from services.guard.adapters.exit_store import ExitStore
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.app import Running, start
from services.guard.config import Settings
from services.ingest.__main__ import Ingest
from services.ingest.config import IngestSettings
from sim.polymarket import PolymarketSim
from tests.control.conftest import TOKEN as CONTROL_TOKEN
from tests.control.conftest import (
    make_settings,
    stubs,  # noqa: F401  (control's stubs, on the control fixture below)
)
from tests.guard.perf_support import make_monitor_fixture, rds_fixture  # noqa: F401
from tests.guard.standins import TOKEN, StandIns, start_standins
from tests.helpers import INTERNAL, retuned, with_tuning
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc


@pytest.fixture
async def trigger_store(db_url: str) -> AsyncIterator[TriggerStore]:
    """Guard's trigger store on the test database, with a small pool of its own."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        yield TriggerStore(pool, lambda: datetime.now(UTC))
    finally:
        await pool.close()


@pytest.fixture
async def exit_store(db_url: str) -> AsyncIterator[ExitStore]:
    """Guard's copy exits store on the test database, with a small pool of its own."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        yield ExitStore(pool, lambda: datetime.now(UTC))
    finally:
        await pool.close()


@pytest.fixture
async def standins(db_url: str, redis_url: str) -> AsyncIterator[StandIns]:
    """Ingest, executor and control stand-ins on free ports."""
    s = await start_standins(db_url, redis_url)
    yield s
    await s.close()


def guard_settings(db_url: str, redis_url: str, s: StandIns, **overrides: Any) -> Settings:
    """Settings pointing guard at the stand-ins, with short periods for tests."""
    base: dict[str, Any] = dict(
        storage=StorageSettings(Secret(db_url), Secret(redis_url)), security=INTERNAL, grpc_port=0,
        ingest_target=s.target(0), executor_target=s.target(1), control_target=s.target(2),
        perf_interval_s=0.1, mark_flush_s=0.05, trigger_check_s=0.3, tick_max_age_s=2.0, grace_s=0.0,
        tick_source="grpc")
    base.update(overrides)
    return with_tuning(Settings, **base)


GuardFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def make_guard(db_url: str, redis_url: str, standins: StandIns) -> AsyncIterator[GuardFactory]:
    """Start guards in-process (``await make_guard(**settings_overrides)``); stopped at teardown."""
    started: list[Running] = []

    async def factory(**overrides: Any) -> Running:
        running = await start(guard_settings(db_url, redis_url, standins, **overrides))
        started.append(running)
        return running

    yield factory
    for running in started:
        # in a task of its own, bounded: a hung shutdown fails the test instead of the session
        await asyncio.wait_for(running.stop(), 30)


@pytest.fixture
async def fast_redis(redis_url: str) -> AsyncIterator[FastRedis]:
    """A pipelined connection (guard's band publisher's client)."""
    fast = FastRedis(redis_url)
    yield fast
    fast.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    """A string-mode Redis client."""
    client = create_redis(redis_url)
    yield client
    await client.aclose()


# control in process (its trigger API), for the tests that PATCH triggers through it
@pytest.fixture
async def control(db_url: str, redis_url: str) -> AsyncIterator[RunningControl]:
    """Control's settings for tests, taking the guard stand-ins' token and control's tests' own."""
    running = await start_control(make_settings(db_url, redis_url, tokens=(Secret(TOKEN), Secret(CONTROL_TOKEN)),
                                                db_timeout_s=2.0))
    yield running
    await running.stop()


@pytest.fixture
async def triggers(control: RunningControl) -> AsyncIterator[pb_grpc.TriggerServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{control.port}")
    yield pb_grpc.TriggerServiceStub(channel)
    await channel.close()


StartIngest = Callable[[], Awaitable[Ingest]]


def ingest_settings(sim: PolymarketSim) -> IngestSettings:
    """Ingest's settings on the simulator, quick to reconnect, without the data-api poller."""
    env = sim.env()
    return retuned(IngestSettings(security=INTERNAL), rtds_url=env["TT_RTDS_URL"], clob_ws_url=env["TT_CLOB_WS_URL"],
                   clob_api_url=env["TT_CLOB_API_URL"], data_api_url=env["TT_DATA_API_URL"], grpc_port=0,
                   poll_enabled=False, watch_refresh_s=0.3, reconnect_base_s=0.05, reconnect_cap_s=0.2,
                   clob_ping_interval_s=0.5, clob_stall_s=10.0, book_stale_s=30.0)


@pytest.fixture
async def start_ingest(sim: PolymarketSim, redis_url: str, db_url: str) -> AsyncIterator[StartIngest]:
    """Starts an ingest on the module's simulator (``sim``; no heartbeat ticks); every one started is stopped at
    the end."""
    started: list[Ingest] = []

    async def start() -> Ingest:
        ingest = Ingest(retuned(ingest_settings(sim), tick_heartbeat_s=600.0), redis_url, db_url)
        await ingest.start()
        started.append(ingest)
        return ingest

    yield start
    for ingest in started:
        await ingest.stop()  # again for one a test stopped: harmless
