"""Market info from a real HTTP stand-in for the CLOB REST API, cached in Redis."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from common.clob_rest import parse_book
from common.fields import ParseError
from common.marketstate import (
    BookSnapshot,
    MarketInfo,
    drop_market_rules,
    read_book,
    read_market,
    write_book,
    write_market,
)
from services.router.adapters.clob_book import book_snapshot
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


@pytest.mark.integration
async def test_missing_is_fetched_and_cached_for_both_tokens(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, _now = env
    info = await cache.resolve(YES, COND, None)
    assert info is not None and info.tick_size == D("0.01") and info.updated_ms == 1_000_000
    assert sorted(fake.requests) == sorted([f"/markets/{COND}", f"/book?token_id={YES}"])
    cached_no = await read_market(r, NO)
    assert cached_no is not None and cached_no.min_order_size == D("5")


@pytest.mark.integration
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


@pytest.mark.integration
async def test_rules_dropped_are_read_again_before_routing(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, _now = env
    await write_market(r, MarketInfo(YES, COND, D("0.001"), D("5"), updated_ms=1_000_000))
    await drop_market_rules(r, YES)  # what the executor does after INVALID_ORDER_MIN_TICK_SIZE
    info = await cache.resolve(YES, COND, await read_market(r, YES))
    assert info is not None and info.tick_size == D("0.01") and fake.requests


@pytest.mark.integration
async def test_unreachable_clob_gives_none(env) -> None:  # type: ignore[no-untyped-def]
    fake, _r, cache, _now = env
    fake.fail = True
    assert await cache.resolve(YES, COND, None) is None


# --- books: the /book answer is stored for the executor unless Redis has a newer one -----------------

def _book_body(**overrides: object) -> dict[str, object]:
    return {**BOOK, **overrides}


def _snapshot(body: dict[str, Any] | None, *, fallback_tick: D | None, now_ms: int) -> BookSnapshot | None:
    """The router's book from a ``/book`` body: parsed (None when it does not parse), then its snapshot."""
    try:
        book = parse_book(body) if body is not None else None
    except ParseError:
        book = None
    return book_snapshot(YES, book, fallback_tick=fallback_tick, now_ms=now_ms)


@pytest.mark.parametrize(("body", "expected"), [
    # wire order is best-LAST; stored best-first
    (_book_body(), ((("0.39", "80"), ("0.38", "120.5")), (("0.41", "55.25"), ("0.42", "300")), "0.01", 1790272269309,
                    True)),
    (_book_body(asks=None, tick_size="", timestamp=None),
     ((("0.39", "80"), ("0.38", "120.5")), (), "0.001", 0, False)),  # tick falls back to market info: not the book's
    (_book_body(bids=[{"price": "0.30", "size": "0"}, {"price": "0.31", "size": "2"}], asks=[]),
     ((("0.31", "2"),), (), "0.01", 1790272269309, True)),  # zero-size levels dropped
])
def test_parse_book_orders_levels_best_first(body: dict[str, object], expected: tuple[Any, ...]) -> None:
    book = _snapshot(body, fallback_tick=D("0.001"), now_ms=7)
    assert book is not None
    bids, asks, tick, venue_ms, tick_known = expected
    assert book.tick_known is tick_known
    assert book.bids == tuple((D(p), D(s)) for p, s in bids)
    assert book.asks == tuple((D(p), D(s)) for p, s in asks)
    assert (book.tick_size, book.venue_time_ms, book.updated_ms, book.condition_id) == (D(tick), venue_ms, 7, COND)


@pytest.mark.parametrize("body", [
    None, {}, _book_body(asset_id=NO), _book_body(bids=[{"price": "abc", "size": "1"}]),
    _book_body(asks=[{"price": "1.5", "size": "1"}]), _book_body(bids="nope"), _book_body(timestamp="soon"),
    _book_body(asks=[{"price": "1", "size": "0"}]),  # a price the venue cannot trade at, even on a gone level
])
def test_unusable_book_bodies_are_not_stored(body: dict[str, object] | None) -> None:
    assert _snapshot(body, fallback_tick=D("0.01"), now_ms=7) is None
    assert _snapshot(_book_body(tick_size=None), fallback_tick=None, now_ms=7) is None


@pytest.mark.integration
async def test_first_fetch_stores_the_book_best_first(env) -> None:  # type: ignore[no-untyped-def]
    _fake, r, cache, _now = env
    assert await read_book(r, YES) is None
    await cache.resolve(YES, COND, None, has_book=False)
    book = await read_book(r, YES)  # stored before resolve returned: no waiting
    assert book is not None and book.best_bid == D("0.39") and book.best_ask == D("0.41")
    assert (book.updated_ms, book.venue_time_ms, book.tick_size) == (1_000_000, 1790272269309, D("0.01"))


@pytest.mark.integration
async def test_cached_info_without_a_book_fetches_the_book_only(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, _now = env
    fresh = MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=999_000)
    assert await cache.resolve(YES, COND, fresh) == fresh and fake.requests == []  # has a book: no request
    assert await cache.resolve(YES, COND, fresh, has_book=False) == fresh
    assert fake.requests == [f"/book?token_id={YES}"]
    book = await read_book(r, YES)
    assert book is not None and book.best_ask == D("0.41")


@pytest.mark.integration
async def test_a_newer_stored_book_is_never_overwritten(env) -> None:  # type: ignore[no-untyped-def]
    _fake, r, cache, _now = env
    fresh = MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=999_000)
    ws = BookSnapshot(YES, COND, ((D("0.5"), D("1")),), ((D("0.6"), D("1")),), D("0.01"),
                      venue_time_ms=1790272269309 + 1, updated_ms=5)
    await write_book(r, ws)
    await cache.resolve(YES, COND, fresh, has_book=False)  # e.g. ingest wrote between read and fetch
    assert await read_book(r, YES) == ws
    older = replace(ws, venue_time_ms=1790272269309 - 1)
    await write_book(r, older)
    await cache.resolve(YES, COND, fresh, has_book=False)
    stored = await read_book(r, YES)
    assert stored is not None and stored.best_bid == D("0.39") and stored.venue_time_ms == 1790272269309


@pytest.mark.integration
async def test_no_book_from_the_clob_still_routes_with_cached_info(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, _now = env
    fake.fail = True
    fresh = MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=999_000)
    assert await cache.resolve(YES, COND, fresh, has_book=False) == fresh
    assert await read_book(r, YES) is None


@pytest.mark.integration
async def test_a_failed_book_fetch_is_not_retried_on_every_trade(env) -> None:  # type: ignore[no-untyped-def]
    fake, r, cache, now = env
    fake.fail = True
    fresh = MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=999_000)
    for _ in range(3):
        assert await cache.resolve(YES, COND, fresh, has_book=False) == fresh
    assert fake.requests == [f"/book?token_id={YES}"]  # asked once, not once per trade
    fake.fail = False
    now["ms"] += 5_000  # the retry interval passed: asked again, and this time stored
    assert await cache.resolve(YES, COND, fresh, has_book=False) == fresh
    assert fake.requests == [f"/book?token_id={YES}"] * 2
    assert await read_book(r, YES) is not None
