"""Fixtures for the control service tests: a real control gRPC server on 127.0.0.1:0 over the
session's real PostgreSQL (fresh database per test) and Redis (flushed per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from common.config import Secret, StorageSettings
from services.control.app import RunningControl, start
from services.control.config import Settings
from tests.helpers import INTERNAL, with_tuning
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

TOKEN = "0123456789abcdef" * 4
TOKEN_2 = "fedcba9876543210" * 4
AUTH = (("authorization", f"Bearer {TOKEN}"),)  # the public services' (the backend's) token
INTERNAL_AUTH = INTERNAL.metadata  # InternalControlService takes the services' internal token only
FOLLOWER = "0x6af75d4e4aaf700450efbac3708cce1665810ff1"
LEADER = "0xf5848342fc388908f2d25a9012cc18a0ad193979"
ASSET = "50346041826216327542356284779626421946911040306225417226009706093563136506499"

def make_settings(db_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings for a test server on a free port."""
    defaults: dict[str, Any] = dict(
        storage=StorageSettings(Secret(db_url), Secret(redis_url)), tokens=(Secret(TOKEN), Secret(TOKEN_2)),
        security=INTERNAL, host="127.0.0.1", grpc_port=0, insiders_api_url="http://127.0.0.1:9",
        index_resync_s=3600.0, index_retry_s=0.2, db_timeout_s=1.0, ready_timeout_s=1.0)
    return with_tuning(Settings, **{**defaults, **overrides})


@dataclass
class Stubs:
    """Client stubs of the four control services on one channel."""

    channel: grpc.aio.Channel
    subs: pb_grpc.SubscriptionServiceStub
    triggers: pb_grpc.TriggerServiceStub
    probes: pb_grpc.ProbeServiceStub
    internal: pb_grpc.InternalControlServiceStub


def stubs_for(port: int) -> Stubs:
    """Open a channel and stubs to a control server."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Stubs(channel, pb_grpc.SubscriptionServiceStub(channel), pb_grpc.TriggerServiceStub(channel),
                 pb_grpc.ProbeServiceStub(channel), pb_grpc.InternalControlServiceStub(channel))


@pytest.fixture
def settings_factory(db_url: str, redis_url: str) -> Callable[..., Settings]:
    """Build settings for this test's database and Redis."""
    return lambda **overrides: make_settings(db_url, redis_url, **overrides)


@pytest.fixture
async def control(db_url: str, redis_url: str) -> AsyncIterator[RunningControl]:
    """A running control service (LIVE enabled)."""
    running = await start(make_settings(db_url, redis_url))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def stubs(control: RunningControl) -> AsyncIterator[Stubs]:
    """Stubs connected to ``control``."""
    s = stubs_for(control.port)
    try:
        yield s
    finally:
        await s.channel.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A Redis client on the test's Redis."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def subscription(**overrides: Any) -> spb.Subscription:
    """A valid subscription create body; keyword overrides set top-level fields."""
    sub = spb.Subscription(
        follower_user_id="u_123", follower_wallet_id="w_456", follower_proxy=FOLLOWER, leader_proxy=LEADER,
        label="sports whale", mode=cpb.EXECUTION_MODE_PAPER,
        sizing=spb.Sizing(mode=spb.SIZING_MODE_PROPORTIONAL, ratio="0.05", max_order_usd="250"),
        filters=spb.Filters(min_price="0.05", max_price="0.95", market_denylist=["btc-updown-5m"]),
    )
    for key, value in overrides.items():
        if isinstance(value, spb.Sizing | spb.Filters | spb.Risk | spb.Exits | spb.Perf):
            getattr(sub, key).CopyFrom(value)
        else:
            setattr(sub, key, value)
    return sub


def trigger(**overrides: Any) -> tpb.Trigger:
    """A valid stop-loss trigger create body (by size, so no position is needed)."""
    t = tpb.Trigger(wallet=FOLLOWER, follower_wallet_id="w_456", asset_id=ASSET,
                    kind=tpb.TRIGGER_KIND_STOP_LOSS, trigger_price="0.22", size="10")
    for key, value in overrides.items():
        setattr(t, key, value)
    return t


def leader(n: int) -> str:
    """A distinct leader address."""
    return "0x" + f"{n:040x}"
