"""Routed entries the router's stream cannot serve (too large for a gRPC message, or not a RoutedTrade at all) are set
aside once as dead letters, whatever restarts of the router serve them again, and the stream goes on behind them."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.alerts import OUTBOX, AlertKind
from common.consumer import RedisCursorStore, ResumableConsumer
from common.retry import Backoff
from common.routed import ORPHANS, expand, orphan_orders
from common.streams import MAX_ENTRY_BYTES, ROUTED_TRADES, START_OLDEST, DurableLog, create_stream_redis
from services.router import server
from tests.helpers import INTERNAL, eventually, internal_channel
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration


def _routed(tid: str, coids: list[str], *, note: str = "") -> bytes:
    routed = epb.RoutedTrade(trade=mpb.LeaderTradeEvent(id=tid))
    routed.orders.extend(epb.Order(client_order_id=c, sizing_note=note) for c in coids)
    return routed.SerializeToString()


async def _serve_until(r: Any, seen: list[str], want: list[str]) -> None:
    """One router process: its routed log served over gRPC to an executor-like consumer until it has ``want``."""
    log_ = DurableLog(r, ROUTED_TRADES, block_ms=100, on_set_aside=functools.partial(orphan_orders, r))
    srv = await server.start(0, log_, security=INTERNAL)
    channel = internal_channel(srv.port)
    stub = egrpc.RouterServiceStub(channel)

    async def open_stream(after: str) -> AsyncIterator[tuple[str, epb.RoutedTrade]]:
        async for resp in stub.StreamRoutedTrades(epb.StreamRoutedTradesRequest(after_cursor=after)):
            yield resp.cursor, expand(resp.routed)

    async def handle(rt: epb.RoutedTrade) -> None:
        seen.append(rt.trade.id)

    consumer = ResumableConsumer("executor", open_stream, handle, RedisCursorStore(r), start=START_OLDEST,
                                 backoff=Backoff(0.001, 0.01), rng=random.Random(1))
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: seen == want)
        await asyncio.sleep(0.3)  # the cursor saved; the unservable entry passed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await channel.close()
        await srv.stop(0)


async def test_an_unservable_routed_part_is_set_aside_once_across_router_restarts(redis_url: str) -> None:
    r: Any = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(r, ROUTED_TRADES)
        await log_.append(_routed("lt_0", ["co_0"]))
        huge = await log_.append(_routed("lt_huge", [f"co_h{i}" for i in range(3)], note="x" * MAX_ENTRY_BYTES))
        seen: list[str] = []
        await _serve_until(r, seen, ["lt_0"])  # nothing after the huge part yet: the reader's cursor is before it
        for _restart in range(2):  # the router restarts; the reader resumes from its cursor, before it again
            await _serve_until(r, seen, ["lt_0"])
        dead = await r.xrange(f"tt:dlq:{ROUTED_TRADES}")
        assert [f[b"cursor"] for _id, f in dead] == [huge.encode()], f"{len(dead)} dead letters of one entry"
        assert {m.decode() for m in await r.smembers(ORPHANS)} == {"co_h0", "co_h1", "co_h2"}
        await log_.append(_routed("lt_1", ["co_1"]))
        await _serve_until(r, seen, ["lt_0", "lt_1"])  # and the stream goes on behind it
    finally:
        await r.aclose()


async def test_a_routed_entry_that_is_not_a_routed_trade_is_set_aside_not_skipped_silently(redis_url: str) -> None:
    r: Any = create_stream_redis(redis_url)
    try:
        log_ = DurableLog(r, ROUTED_TRADES)
        await log_.append(_routed("lt_0", ["co_0"]))
        bad = await log_.append(b"\xff\xff\xff not a RoutedTrade")
        await log_.append(_routed("lt_1", ["co_1"]))
        OUTBOX.items.clear()
        seen: list[str] = []
        await _serve_until(r, seen, ["lt_0", "lt_1"])
        dead = await r.xrange(f"tt:dlq:{ROUTED_TRADES}")
        assert [(f[b"cursor"], f[b"p"]) for _id, f in dead] == [(bad.encode(), b"\xff\xff\xff not a RoutedTrade")]
        assert dead[0][1][b"error"].startswith(b"MALFORMED")
        assert any(a.kind == AlertKind.DEAD_LETTERED and a.fields["cursor"] == bad for a in list(OUTBOX.items))
    finally:
        await r.aclose()
