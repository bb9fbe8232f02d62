"""Market info from a real HTTP stand-in for the CLOB REST API, cached in Redis."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from common.marketstate import MarketInfo, market_key, read_market, write_market
from services.router.adapters.markets import ClobMarketInfo, MarketInfoCache, parse_market_info
from tests.helpers import eventually
from tests.router.fakes import FakeHttp, load

D = Decimal
MARKET = load("clob_market.json")
BOOK = load("clob_book.json")
YES, NO = (t["token_id"] for t in MARKET["tokens"])
COND = MARKET["condition_id"]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "polymarket" / "fixtures"


def test_parse_market_and_book() -> None:
    infos = parse_market_info(YES, MARKET, BOOK, 5)
    assert [i.asset_id for i in infos] == [YES, NO]
    yes = infos[0]
    assert (yes.tick_size, yes.min_order_size, yes.neg_risk, yes.closed, yes.accepting_orders) == (
        D("0.01"), D("5"), False, False, True)
    assert (yes.condition_id, yes.market_slug, yes.updated_ms) == (COND, "will-it-rain", 5)
    # the book's tick is current and wins over the market's
    assert parse_market_info(YES, MARKET, {**BOOK, "tick_size": "0.001"}, 5)[0].tick_size == D("0.001")
    only_book = parse_market_info(YES, None, BOOK, 5)
    assert [i.asset_id for i in only_book] == [YES] and only_book[0].condition_id == COND
    closed = parse_market_info(YES, {**MARKET, "closed": True, "accepting_orders": False}, None, 5)[0]
    assert closed.closed and not closed.accepting_orders
    with pytest.raises(ValueError):
        parse_market_info(YES, {**MARKET, "minimum_tick_size": None}, None, 5)


@pytest.mark.parametrize("name", ["clob_market_rest_2024.json", "clob_market_rest_closed_2026.json"])
def test_conformance_with_recorded_market_info(name: str) -> None:
    path = SHARED / name
    if not path.exists():
        pytest.skip("shared fixtures not available")
    body = json.loads(path.read_text())
    asset = body["tokens"][0]["token_id"]
    [info, *_] = parse_market_info(asset, body, None, 1)
    assert info.tick_size > 0 and info.condition_id == body["condition_id"].lower()
    assert info.closed is bool(body["closed"]) and info.accepting_orders is bool(body["accepting_orders"])


def test_conformance_with_recorded_book() -> None:
    path = SHARED / "clob_book_rest_empty_asks.json"
    if not path.exists():
        pytest.skip("shared fixtures not available")
    body = json.loads(path.read_text())
    [info] = parse_market_info(body["asset_id"], None, body, 1)
    assert (info.tick_size, info.min_order_size, info.neg_risk) == (D("0.001"), D("5"), True)


@pytest.fixture
async def env(redis_url: str):  # type: ignore[no-untyped-def]
    fake = FakeHttp()
    fake.add_market(MARKET, BOOK)
    await fake.start()
    r = aioredis.from_url(redis_url, decode_responses=True)
    session = aiohttp.ClientSession()
    now = {"ms": 1_000_000}
    cache = MarketInfoCache(r, ClobMarketInfo(session, fake.url, timeout_s=2), ttl_ms=60_000,
                            clock_ms=lambda: now["ms"])
    yield fake, r, cache, now
    await session.close()
    await r.aclose()
    await fake.stop()


async def test_missing_is_fetched_and_cached_for_both_tokens(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, _now = env
    info = await cache.resolve(YES, COND, None)
    assert info is not None and info.tick_size == D("0.01") and info.updated_ms == 1_000_000
    assert sorted(fake.requests) == sorted([f"/markets/{COND}", f"/book?token_id={YES}"])
    cached_no = await read_market(r, NO)
    assert cached_no is not None and cached_no.min_order_size == D("5")


async def test_fresh_cache_is_used_and_old_one_refreshed_in_background(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, now = env
    await write_market(r, MarketInfo(YES, COND, D("0.001"), D("5"), event_slug="weather", updated_ms=999_000))
    fresh = await read_market(r, YES)
    assert await cache.resolve(YES, COND, fresh) == fresh and fake.requests == []
    now["ms"] = 999_000 + 60_001
    assert await cache.resolve(YES, COND, fresh) == fresh  # old: used now, refreshed behind

    async def refreshed() -> bool:
        info = await read_market(r, YES)
        return info is not None and info.tick_size == D("0.01")

    await eventually(refreshed)
    info = await read_market(r, YES)
    assert info is not None and info.tick_size == D("0.01") and info.event_slug == "weather"


async def test_stale_signal_is_a_deleted_key(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, _now = env
    await write_market(r, MarketInfo(YES, COND, D("0.001"), D("5"), updated_ms=1_000_000))
    await r.delete(market_key(YES))  # what the executor does after INVALID_ORDER_MIN_TICK_SIZE
    info = await cache.resolve(YES, COND, await read_market(r, YES))
    assert info is not None and info.tick_size == D("0.01") and fake.requests


async def test_unreachable_clob_gives_none(env) -> None:  # type: ignore[no-untyped-def]
    fake, _r, cache, _now = env
    fake.fail = True
    assert await cache.resolve(YES, COND, None) is None
