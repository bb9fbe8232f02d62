"""The CLOB REST client and parsers shared by ingest and the router: what wins when a market and a book are
merged (pure), and the getter's answers against a real HTTP server on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from common.clob_rest import DEFAULT_TICK, ClobRest, market_infos, parse_book, parse_market
from common.fields import ParseError
from common.restget import HttpStatusError, RateLimited, RequestFailed, RestGetter
from services.ingest.ratelimit import TokenBucket

D = Decimal
COND = "0x" + "ab" * 32
YES, NO = "1" * 70, "2" * 70


def _market(**overrides: Any) -> dict[str, Any]:
    return {"condition_id": COND, "minimum_tick_size": 0.01, "minimum_order_size": 5, "neg_risk": False,
            "closed": False, "accepting_orders": True, "market_slug": "rain",
            "tokens": [{"token_id": YES, "outcome": "Yes", "winner": False},
                       {"token_id": NO, "outcome": "No", "winner": False}], **overrides}


def _book(**overrides: Any) -> dict[str, Any]:
    return {"market": COND, "asset_id": YES, "timestamp": "1790000000000", "bids": [], "asks": [],
            "tick_size": "0.001", "min_order_size": "10", "neg_risk": True, **overrides}


@pytest.mark.parametrize(("market", "book", "asset", "default", "expected"), [
    # (ids, tick, min size, neg risk): the book's tick and minimum win; the market's neg-risk flag wins
    (_market(), _book(), YES, None, ([YES, NO], "0.001", "10", False)),
    (_market(), None, YES, None, ([YES, NO], "0.01", "5", False)),
    (None, _book(), YES, None, ([YES], "0.001", "10", True)),
    (_market(neg_risk=None), _book(), YES, None, ([YES, NO], "0.001", "10", True)),
    (_market(minimum_tick_size=None, minimum_order_size=None), None, "", DEFAULT_TICK, ([YES, NO], "0.01", "0", False)),
    (_market(), None, "3" * 70, None, ([YES, NO], "0.01", "5", False)),  # not a token, no book: left out
    (_market(), _book(asset_id="3" * 70), "3" * 70, None, (["3" * 70, YES, NO], "0.001", "10", False)),
])
def test_market_infos_merge(market: dict[str, Any] | None, book: dict[str, Any] | None, asset: str,
                            default: Decimal | None, expected: tuple[list[str], str, str, bool]) -> None:
    infos = market_infos(5, market=parse_market(market) if market else None, book=parse_book(book) if book else None,
                         asset_id=asset, default_tick=default)
    ids, tick, min_size, neg_risk = expected
    assert [i.asset_id for i in infos] == ids
    assert {(i.tick_size, i.min_order_size, i.neg_risk, i.condition_id, i.updated_ms) for i in infos} == {
        (D(tick), D(min_size), neg_risk, COND, 5)}


def test_market_infos_without_a_tick_size_is_an_error() -> None:
    with pytest.raises(ParseError, match="tick_size"):
        market_infos(5, market=parse_market(_market(minimum_tick_size=None)))


@pytest.mark.parametrize("body", [
    _market(tokens="x"), _market(tokens=[{"token_id": 5}]), _market(condition_id="0x12"),
    _market(minimum_tick_size=1.5), _market(market_slug=7),
])
def test_a_malformed_market_body_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ParseError):
        parse_market(body)


class Venue:
    """A real HTTP server answering ``/book`` and ``/markets/{id}`` with what the test sets."""

    def __init__(self) -> None:
        self.status, self.body, self.headers = 200, b"{}", {}
        self.requests: list[str] = []
        self.url = ""

    async def answer(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        return web.Response(status=self.status, body=self.body, headers=self.headers,
                            content_type="application/json")


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    v = Venue()
    app = web.Application()
    app.router.add_get("/{path:.*}", v.answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    v.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield v
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.integration
async def test_the_client_asks_for_a_book_and_a_market(venue: Venue, http: aiohttp.ClientSession) -> None:
    statuses: list[str] = []
    rest = ClobRest(RestGetter(http, feed="clob_rest", on_status=statuses.append, timeout_s=2), venue.url + "/")
    venue.body = orjson.dumps(_book())
    page = await rest.book(YES)
    assert parse_book(page.body).asset_id == YES and page.received_ns <= time.time_ns()
    venue.body = orjson.dumps(_market())
    assert parse_market((await rest.market(COND)).body).condition_id == COND
    assert venue.requests == [f"/book?token_id={YES}", f"/markets/{COND}"] and statuses == ["ok", "ok"]


@pytest.mark.integration
async def test_failures_come_back_as_the_getters_own_errors(venue: Venue, http: aiohttp.ClientSession) -> None:
    statuses: list[str] = []
    bucket = TokenBucket(1000.0, 10, time.monotonic())
    getter = RestGetter(http, bucket, feed="clob_rest", on_status=statuses.append, timeout_s=2)
    venue.status, venue.headers = 429, {"Retry-After": "7"}
    with pytest.raises(RateLimited) as limited:
        await getter.get(venue.url + "/book", {"token_id": YES})
    assert limited.value.retry_after_s == 7.0 and bucket.paused_until > time.monotonic() + 6
    venue.status, venue.headers = 404, {}
    with pytest.raises(HttpStatusError) as status:
        await getter.get(venue.url + "/book", {})
    assert status.value.status == 404
    venue.status, venue.body = 200, b"<html>"
    with pytest.raises(ParseError, match="NOT_JSON"):
        await getter.get(venue.url + "/book", {})
    with pytest.raises(RequestFailed):
        await getter.get("http://127.0.0.1:9/book", {})  # nothing listens there
    assert statuses == ["429", "404", "ok", "error"]
