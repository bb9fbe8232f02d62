"""One span per leader trade, child of the trace context carried in the event; orders carry it on."""

from __future__ import annotations

import time
from decimal import Decimal

import aiohttp
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common import hotindex
from common.fastredis import FastRedis
from common.marketstate import MarketInfo, write_market
from common.storage import create_pool
from common.streams import ROUTED_TRADES, DurableLog, create_stream_redis
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


async def test_router_span_is_a_child_of_the_event_trace(db_url: str, redis_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    r = aioredis.from_url(redis_url, decode_responses=True)
    sr = create_stream_redis(redis_url)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    session = aiohttp.ClientSession()
    await hotindex.upsert(r, subscription("sub_1", "w_1"))
    await write_market(r, MarketInfo(YES, COND, Decimal("0.01"), Decimal("5"), updated_ms=time.time_ns() // 10**6))
    subs = SubscriptionCache(r)
    await subs.reload_all()
    fast = FastRedis(redis_url)
    state = RedisState(fast, ROUTED_TRADES, marker_ttl_s=60, stream_maxlen=1000)
    store = RouterStore(pool)
    router = Router(followers=subs, redis_state=state, store=store,
                    markets=MarketInfoCache(r, ClobMarketInfo(session, "http://127.0.0.1:9", timeout_s=0.1),
                                            ttl_ms=60_000, clock_ms=lambda: time.time_ns() // 10**6),
                    balances=NoBalances(), emitter=Emitter(state, store), knobs=Knobs(), metrics=RouterMetrics(),
                    tracer=provider.get_tracer("test"))
    ev = leader_trade("lt_traced")
    await router.handle(ev)
    [span] = exporter.get_finished_spans()
    _version, trace_id, parent_id, _flags = ev.trace.traceparent.split("-")
    assert span.name == "router.route"
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == trace_id and f"{span.parent.span_id:016x}" == parent_id
    [(_, payload)] = await DurableLog(sr, ROUTED_TRADES).read("0-0", block_ms=0)
    [order] = epb.RoutedTrade.FromString(payload).orders
    assert order.trace.traceparent.split("-")[1:3] == [trace_id, f"{span.context.span_id:016x}"]
    fast.close()
    await session.close()
    await store.close()
    await pool.close()
    await sr.aclose()
    await r.aclose()
