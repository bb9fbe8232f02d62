"""One span per leader trade, child of the trace context carried in the event; orders carry it on.
Without an exporter the router makes no span and the orders carry the event's context unchanged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import aiohttp
import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import hotindex
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.routed import parse_routed
from common.storage import create_pool
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
from common.telemetry import setup_telemetry
from services.router.adapters.balances import NoBalances
from services.router.adapters.markets import ClobMarketInfo, MarketInfoCache
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import RouterStore
from services.router.adapters.subscriptions import SubscriptionCache
from services.router.metrics import RouterMetrics
from services.router.outbox import Emitter
from services.router.router import Knobs, Router
from tests.router.conftest import COND, YES, leader_trade, subscription
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


@dataclass
class _Rig:
    redis: aioredis.Redis
    stream_redis: aioredis.Redis
    store: RouterStore
    state: RedisState


@pytest.fixture
async def rig(db_url: str, redis_url: str) -> AsyncIterator[_Rig]:
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    await hotindex.upsert(r, subscription("sub_1", "w_1"))
    await write_market(r, MarketInfo(YES, COND, Decimal("0.01"), Decimal("5"), updated_ms=time.time_ns() // 10**6))
    fast = FastRedis(redis_url)
    store = RouterStore(pool)
    yield _Rig(r, sr, store, RedisState(fast, ROUTED_TRADES, marker_ttl_s=60, stream_maxlen=1000))
    fast.close()
    await store.close()
    await pool.close()
    await sr.aclose()
    await r.aclose()


async def _route(rig: _Rig, leader_trade_id: str, tracer: trace.Tracer | None) -> tuple[epb.Order, str]:
    """Route one leader trade; returns its order and the event's traceparent."""
    subs = SubscriptionCache(rig.redis)
    await subs.reload_all()
    async with aiohttp.ClientSession() as session:
        markets = MarketInfoCache(rig.redis, ClobMarketInfo(session, "http://127.0.0.1:9", timeout_s=0.1),
                                  ttl_ms=60_000, clock_ms=lambda: time.time_ns() // 10**6)
        router = Router(followers=subs, redis_state=rig.state, store=rig.store, markets=markets,
                        balances=NoBalances(), emitter=Emitter(rig.state, rig.store), knobs=Knobs(),
                        metrics=RouterMetrics(), tracer=tracer)
        ev = leader_trade(leader_trade_id)
        await router.handle(ev)
    entries = await DurableLog(rig.stream_redis, ROUTED_TRADES).read("0-0", block_ms=0)
    routed = [parse_routed(payload) for _, payload in entries]
    [order] = [o for rt in routed if rt.trade.id == leader_trade_id for o in rt.orders]
    return order, ev.trace.traceparent


async def test_router_span_is_a_child_of_the_event_trace(rig: _Rig) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    order, traceparent = await _route(rig, "lt_traced", provider.get_tracer("test"))
    [span] = exporter.get_finished_spans()
    _version, trace_id, parent_id, _flags = traceparent.split("-")
    assert span.name == "router.route"
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == trace_id and f"{span.parent.span_id:016x}" == parent_id
    assert order.trace.traceparent.split("-")[1:3] == [trace_id, f"{span.context.span_id:016x}"]


async def test_without_an_exporter_orders_carry_the_event_context(rig: _Rig) -> None:
    """No span is made (its cost is on the routing path); the trace still spans the layers."""
    setup_telemetry("router-tests")  # what every service installs: a real tracer provider, no exporter
    order, traceparent = await _route(rig, "lt_untraced", None)
    assert order.trace.traceparent == traceparent
