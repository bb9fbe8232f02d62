"""Perf rules end to end: control in process, Redis, guard's PerfMonitor on real stores; fixtures and helpers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from common.ids import new_id
from common.marketstate import BookSnapshot, write_book
from common.storage import create_pool, create_redis
from services.control.app import RunningControl
from services.guard.adapters.control_client import GrpcControl
from services.guard.adapters.market_state import RedisMarkets
from services.guard.adapters.perf_store import PerfStore
from services.guard.adapters.trigger_store import Clock
from services.guard.perf_monitor import PerfMonitor
from services.guard.ports import Control
from tests.control.conftest import AUTH, subscription
from tests.helpers import internal_channel
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

A1, A2 = "1111", "2222"
SCALE_X2 = spb.Perf(profit_scale_at_usd="100", profit_scale_multiplier="2")


@pytest.fixture(name="rds")
async def rds_fixture(redis_url: str) -> AsyncIterator[Any]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(name="make_monitor")
async def make_monitor_fixture(db_url: str, control: RunningControl,
                               rds: Any) -> AsyncIterator[Callable[..., PerfMonitor]]:
    """PerfMonitor(store_cls, stand_in=..., clock=...) on guard's real adapters, talking to the real control."""
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    channel = internal_channel(control.port)

    def factory(store_cls: type[PerfStore] = PerfStore, stand_in: Control | None = None,
                clock: Clock | None = None) -> PerfMonitor:
        return PerfMonitor(store_cls(pool, clock or (lambda: datetime.now(UTC))),
                           stand_in or GrpcControl(channel, timeout_s=5.0), RedisMarkets(rds), interval_s=0.1)

    yield factory
    await channel.close()
    await pool.close()


async def add_fill(conn: Any, sub_id: str, asset: str, side: str, size: str, price: str, venue: str = "PAPER") -> None:
    """A fill and its stats bump, as the executor books them (one transaction)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, side,"
            " size, price, notional_usd, venue, fill_time) VALUES (%s,%s,'w_456',%s,%s,'',%s,%s,%s,%s,%s, now())",
            (new_id("fill"), sub_id, new_id("co"), asset, side, Decimal(size), Decimal(price),
             Decimal(size) * Decimal(price), venue))
        await conn.execute(
            "INSERT INTO subscription_stats (subscription_id, fills_version) VALUES (%s, 1)"
            " ON CONFLICT (subscription_id) DO UPDATE SET fills_version = subscription_stats.fills_version + 1",
            (sub_id,))


async def put_book(rds: Any, asset: str, bid: str, ask: str, *, session: str = "") -> None:
    """A book snapshot taken now (fresh unless ``session`` is not the feed's)."""
    await write_book(rds, BookSnapshot(asset, "", ((Decimal(bid), Decimal(100)),), ((Decimal(ask), Decimal(100)),),
                                       Decimal("0.01"), 0, time.time_ns() // 1_000_000, session=session))


async def create(stubs: Any, perf: spb.Perf, mode: int = cpb.EXECUTION_MODE_PAPER) -> spb.Subscription:
    return await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(mode=mode, perf=perf)), metadata=AUTH)


async def get(stubs: Any, sid: str) -> spb.Subscription:
    return await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sid), metadata=AUTH)


async def patch(stubs: Any, sid: str, body: spb.Subscription) -> spb.Subscription:
    return await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(id=sid, subscription=body), metadata=AUTH)


async def decisions(conn: Any, sid: str) -> list[tuple[str, bool | None, str]]:
    rows = await (await conn.execute("SELECT action, applied, error FROM guard_perf_decisions"
                                     " WHERE subscription_id = %s ORDER BY seq", (sid,))).fetchall()
    return [(r["action"], r["applied"], r["error"]) for r in rows]
