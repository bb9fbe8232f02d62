"""A venue refusal that has the router read an asset's rules again (MARKET_CLOSED, INVALID_ORDER_MIN_TICK_SIZE,
INVALID_ORDER_MIN_SIZE) keeps what is no cached rule: a resolved market stays closed when the router then reads a
CLOB REST answer lagging the resolution. The executor, the router's reads and CLOB REST stand-in on real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from common.fastredis import FastRedis
from common.marketstate import MarketInfo, read_market
from common.streams import ROUTED_TRADES
from services.ingest.resolutions import close_markets
from services.router.adapters.markets import ClobMarketInfo, MarketInfoCache
from services.router.adapters.redis_state import RedisState
from services.router.read_model import market_rules
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order
from tests.helpers import eventually
from tests.router.fakes import FakeHttp, load
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
OTHER = "2" * 77  # the market's other token (outcome 1)


def clob_market(**over: Any) -> dict[str, Any]:
    """CLOB REST ``GET /markets/{condition}`` of the harness's market: ASSET is outcome 0, OTHER outcome 1."""
    body = load("clob_market.json")
    body.update(condition_id=CONDITION, tokens=[
        {"token_id": ASSET, "outcome": "Yes", "price": 0.4, "winner": False},
        {"token_id": OTHER, "outcome": "No", "price": 0.6, "winner": False}], **over)
    return body


@dataclass
class RouterSide:
    """The router's market reads: its batch read of Redis, its cache over a CLOB REST stand-in."""

    clob: FakeHttp
    state: RedisState
    cache: MarketInfoCache

    async def rules(self, asset_id: str) -> MarketInfo | None:
        """What the router routes a trade in ``asset_id`` with (read, then resolved as ``Router._decide`` does)."""
        view = await self.state.read_batch([], [asset_id], {})
        return await self.cache.resolve(asset_id, CONDITION, view.markets[asset_id])

    def market_reads(self) -> int:
        return sum(p.startswith("/markets/") for p in self.clob.requests)


@pytest.fixture
async def router_side(redis_url: str) -> AsyncIterator[RouterSide]:
    clob = FakeHttp()
    clob.add_market(clob_market())
    await clob.start()
    fast = FastRedis(redis_url, timeout_s=5.0)
    r = aioredis.from_url(redis_url, decode_responses=True)
    session = aiohttp.ClientSession()
    cache = MarketInfoCache(r, ClobMarketInfo(session, clob.url, timeout_s=2), ttl_ms=300_000,
                            clock_ms=lambda: time.time_ns() // 1_000_000)
    yield RouterSide(clob, RedisState(fast, ROUTED_TRADES, marker_ttl_s=60, stream_maxlen=1000), cache)
    await session.close()
    await r.aclose()
    fast.close()
    await clob.stop()


async def refused(harness: Harness, code: str) -> None:
    """A copy routed before the market changed is POSTed and refused with ``code``."""
    harness.fake.faults.reject_queue.append(code)
    if harness.executor is None:
        await harness.start_executor()
    order = make_order(len(harness.fake.posts))
    await harness.route(order)
    final = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=10)
    assert (final.type, final.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, code)


@pytest.mark.parametrize("code", ["MARKET_CLOSED", "INVALID_ORDER_MIN_TICK_SIZE", "INVALID_ORDER_MIN_SIZE"])
async def test_a_resolved_market_stays_closed_to_the_router_after_a_refusal_while_clob_rest_lags(
        harness: Harness, router_side: RouterSide, code: str) -> None:
    assert (await router_side.rules(ASSET)) is not None  # cached from CLOB REST: open
    await close_markets(harness.redis, CONDITION, [ASSET, OTHER], winner=ASSET)  # ingest: the market resolved
    before = await router_side.rules(ASSET)
    assert before is not None and before.closed and router_side.market_reads() == 1

    await refused(harness, code)  # a copy routed before the resolution reached the router
    for _trade in range(2):  # CLOB REST still lists the market open (it lags the resolution)
        rules = market_rules(await router_side.rules(ASSET))
        assert rules is not None and (rules.closed, rules.accepting_orders) == (True, False)

    assert router_side.market_reads() == 1  # a resolved market's rules are not read again: it stays closed
    stored = await read_market(harness.redis, ASSET)  # as guard, paper and ingest read it
    assert stored is not None and (stored.closed, stored.resolved_winner, stored.outcome_index) == (True, ASSET, 0)


@pytest.mark.parametrize("winner", [ASSET, ""])  # "": a socket frame CLOB REST has not confirmed yet
async def test_a_market_closed_by_ingest_after_a_refusal_is_closed_to_the_router_while_clob_rest_lags(
        harness: Harness, router_side: RouterSide, winner: str) -> None:
    assert (await router_side.rules(ASSET)) is not None  # cached from CLOB REST: open
    await refused(harness, "INVALID_ORDER_MIN_SIZE")  # its rules are to be read again
    await close_markets(harness.redis, CONDITION, [ASSET, OTHER], winner=winner)  # then ingest closes the market

    rules = market_rules(await router_side.rules(ASSET))  # CLOB REST still lists the market open
    assert rules is not None and (rules.closed, rules.accepting_orders) == (True, False)
    assert router_side.market_reads() == 1
