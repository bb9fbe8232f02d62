"""Market rules after a venue refusal: the executor drops an asset's cached rules (``drop_market_rules``), then a socket
``tick_size_change`` that ingest writes brings ``tick_size`` back without ``min_order_size``. Rules missing either
field are not known: the router reads them again from CLOB REST before it sizes a copy, as it does for a market it
has no rules for, instead of sizing with a minimum order size of 0 (a copy the venue refuses)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.marketstate import MarketInfo, drop_market_rules, market_key, read_market, write_market
from common.resp import RespConnection
from services.ingest import clob
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.metrics import IngestMetrics
from tests.helpers import eventually
from tests.router.conftest import COND, YES, Stack, leader_trade, subscription
from tests.router.test_markets import env
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
__all__ = ["env"]

D = Decimal


async def _rules_dropped_then_tick_changed(redis: Any, redis_url: str) -> None:
    """YES cached whole (tick 0.001, minimum 5), its rules dropped on a refusal, then ingest's book feed writes the
    socket's ``tick_size_change`` to 0.01 (the CLOB stand-in's tick)."""
    await write_market(redis, MarketInfo(YES, COND, D("0.001"), D("5"), updated_ms=int(time.time() * 1000) - 1000))
    await drop_market_rules(redis, YES)
    books = BookState()
    books.track(YES)
    now_ms = int(time.time() * 1000)
    books.apply(clob.parse_event({"event_type": "book", "asset_id": YES, "market": COND, "bids": [], "asks": [],
                                  "tick_size": "0.001", "timestamp": str(now_ms)}), now_ms)
    publisher = BookPublisher(lambda: RespConnection.open(redis_url), books, IngestMetrics())
    try:
        frame = {"event_type": "tick_size_change", "asset_id": YES, "market": COND, "old_tick_size": "0.001",
                 "new_tick_size": "0.01", "timestamp": str(now_ms)}
        for touched in books.apply(clob.parse_event(frame), now_ms):
            publisher.mark(touched, time.time_ns())
        await publisher.flush()
    finally:
        publisher.close()
    stored = await redis.hgetall(market_key(YES))
    assert stored["tick_size"] == "0.01" and "min_order_size" not in stored  # the half hash


async def test_a_tick_size_change_after_the_rules_were_dropped_leaves_them_unknown(env: Any, redis_url: str) -> None:
    fake, r, cache, now = env
    await _rules_dropped_then_tick_changed(r, redis_url)
    cached = await read_market(r, YES)
    assert cached is not None
    now["ms"] = int(time.time() * 1000)  # the entry is fresh: only unknown rules send the router to CLOB REST
    info = await cache.resolve(YES, COND, cached)
    assert info is not None and (info.tick_size, info.min_order_size) == (D("0.01"), D("5")), \
        f"routed with tick {info and info.tick_size}, minimum {info and info.min_order_size}"
    assert f"/markets/{COND}" in fake.requests
    stored = await read_market(r, YES)
    assert stored is not None and (stored.tick_size, stored.min_order_size) == (D("0.01"), D("5"))


async def test_no_copy_below_the_market_minimum_is_sent_after_a_tick_size_change_on_dropped_rules(
        stack: Stack) -> None:
    """$1 at 0.40 is 2.5 shares: below the market's minimum of 5, skipped, never sent to the venue."""
    await _rules_dropped_then_tick_changed(stack.redis, stack.redis_url)
    await stack.add(subscription("sub_small", "w_small", sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD,
                                                                           fixed_usd="1")))
    await stack.start_router()
    await stack.publish(leader_trade("lt_small"))

    routed: list[epb.RoutedTrade] = await eventually(stack.routed, timeout_s=15)
    [trade] = routed
    sent = [(o.amount_usd, o.min_order_size) for o in trade.orders]
    assert sent == [], f"copies sent (amount, minimum): {sent}"
    assert [(s.subscription_id, s.reason) for s in trade.skips] == [("sub_small", "BELOW_MARKET_MINIMUM")]
    assert f"/markets/{COND}" in stack.http.requests
