"""The book path's fast paths: cached number parsing keeps every rule, a flush writes every tick in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from common.marketstate import read_book
from common.resp import RespConnection
from common.streams import PRICE_TICKS
from services.ingest import clob, model
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.metrics import IngestMetrics
from services.ingest.model import ParseError
from tests.helpers import eventually
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
T1 = "1" * 70


def change(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_type": "price_change", "market": "0x" + "ab" * 32, "timestamp": "1",
                            "price_changes": [{"asset_id": T1, "price": "0.5", "size": "10", "side": "BUY"}]}
    base["price_changes"][0].update(fields)
    return base


def outcome(read: Callable[[], Any]) -> Any:
    """What ``read()`` gives: its value, or the kind of the ParseError it raises (fast and checked paths compared)."""
    try:
        return read()
    except ParseError as exc:
        return exc.kind


def price_change(d: dict[str, Any]) -> clob.PriceChangeMsg:
    msg = clob.parse_event(d)
    assert isinstance(msg, clob.PriceChangeMsg)
    return msg


@pytest.mark.parametrize(("fields", "kind"), [
    ({"price": "1.5"}, "BAD_FIELD"),
    ({"price": "-0.1"}, "BAD_FIELD"),
    ({"size": "-1"}, "BAD_FIELD"),
    ({"side": "HOLD"}, "BAD_FIELD"),
    ({"price": "abc"}, "BAD_NUMBER"),
    ({"asset_id": ""}, "MISSING_FIELD"),
    ({"asset_id": 7}, "BAD_FIELD"),
])
def test_bad_values_are_refused_even_after_good_ones_were_cached(fields: dict[str, Any], kind: str) -> None:
    clob.parse_event(change())  # "0.5" / "10" now cached
    with pytest.raises(ParseError) as exc:
        clob.parse_event(change(**fields))
    assert exc.value.kind == kind


@pytest.mark.parametrize(("fields", "price", "size", "side"), [
    ({}, D("0.5"), D("10"), "BUY"),
    ({"price": 0.25, "size": 3}, D("0.25"), D("3"), "BUY"),  # JSON numbers: parsed via str, never cached
    ({"side": "sell", "size": "0"}, D("0.5"), D("0"), "SELL"),
    ({"size": None}, D("0.5"), None, "BUY"),
])
def test_good_values_parse_the_same_cached_or_not(fields: dict[str, Any], price: Decimal, size: Decimal | None,
                                                  side: str) -> None:
    for _ in range(2):
        msg = clob.parse_event(change(**fields))
        assert isinstance(msg, clob.PriceChangeMsg)
        [c] = msg.changes
        assert (c.price, c.size, c.side) == (price, size, side)


@pytest.mark.parametrize("stamp", ["1700000000000", "0", "007", 1700000000000, "1.7e12", "", None, "abc", "-5",
                                   "\u0661\u0662", "99999999999999999", "1" * 15, " 12", True])
def test_the_timestamp_fast_path_agrees_with_the_checked_parser(stamp: Any) -> None:
    d = change()
    d["timestamp"] = stamp
    assert outcome(lambda: price_change(d).venue_ms) == outcome(lambda: model.millis(d, "timestamp"))


@pytest.mark.parametrize("fields", [{"best_bid": "0.49", "best_ask": "0.51"}, {"best_bid": "", "best_ask": None},
                                    {"best_bid": 0.4, "best_ask": "0.6"}, {"size": ""}, {"side": "buy"}])
def test_level_change_fast_path_agrees_with_the_checked_parsers(fields: dict[str, Any]) -> None:
    item = change(**fields)["price_changes"][0]
    for _ in range(2):  # uncached, then cached
        [c] = clob.parse_event(change(**fields)).changes  # type: ignore[union-attr]
        assert c == clob.LevelChange(T1, model.side(item, "side"), clob.price_or_none(item, "price"),  # type: ignore[arg-type]
                                     clob.size_or_none(item, "size"), clob.price_or_none(item, "best_bid"),
                                     clob.price_or_none(item, "best_ask"))


@pytest.mark.integration
async def test_a_flush_appends_every_tick_in_order_and_writes_each_book(redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=False)
    books = BookState()
    assets = [f"{i:070d}" for i in range(1, 31)]
    for a in assets:
        books.track(a)
    pub = BookPublisher(lambda: RespConnection.open(redis_url), books, IngestMetrics())
    for a in assets:  # synced, empty books: each BUY level below becomes the new best bid
        books.apply(clob.parse_event({"event_type": "book", "asset_id": a, "market": "0x" + "ab" * 32,
                                      "bids": [], "asks": [], "timestamp": "1"}), 1000)
    expected: list[tuple[str, str]] = []
    for step in range(60):  # 60 moves x 30 assets = 1,800 ticks: more than one append chunk
        for a in assets:
            price = f"0.{10 + step:02d}"
            msg = clob.parse_event(change(asset_id=a, price=price, size="5"))
            for touched in books.apply(msg, 1000 + step):
                pub.mark(touched, 1)
            expected.append((a, str(D(price).normalize())))
    await pub.flush()
    rows: Any = await r.xrange(PRICE_TICKS, count=10_000)
    got = [(t.asset_id, t.best_bid) for t in (mpb.PriceTick.FromString(f[b"p"]) for _i, f in rows)]
    assert got == expected
    for a in assets:
        book = await read_book(r, a)
        assert book is not None and book.best_bid == D("0.69") and len(book.bids) == 60
    pub.close()
    await r.aclose()


@pytest.mark.parametrize("bad", [{"price": ["0.5"]}, {"size": {"n": 1}}, {"best_bid": [1]}, {"best_ask": "2"},
                                 {"asset_id": None}, {"asset_id": "x" * 101}, {"side": None}, {"size": "-1"}])
def test_every_entry_of_a_message_of_cached_values_is_still_checked(bad: dict[str, Any]) -> None:
    clob.parse_event(change(best_bid="0.4", best_ask="0.6"))  # every value below is cached
    d = change(best_bid="0.4", best_ask="0.6")
    d["price_changes"].append({**d["price_changes"][0], **bad})
    with pytest.raises(ParseError):
        clob.parse_event(d)
    d["price_changes"][1] = "not an object"
    with pytest.raises(ParseError):
        clob.parse_event(d)


async def _has(r: Any, n: int) -> bool:
    return bool(await r.xlen(PRICE_TICKS) == n)


def _tick_of(books: BookState, pub: BookPublisher, asset: str, price: str) -> None:
    for touched in books.apply(clob.parse_event(change(asset_id=asset, price=price, size="5")), 1000):
        pub.mark(touched, 1)


def _empty_book_and_publisher(redis_url: str) -> tuple[BookState, BookPublisher]:
    """T1 followed with an empty book, and a publisher writing to ``redis_url``."""
    books = BookState()
    books.track(T1)
    books.apply(clob.parse_event({"event_type": "book", "asset_id": T1, "market": "0x" + "ab" * 32,
                                  "bids": [], "asks": [], "timestamp": "1"}), 1000)
    return books, BookPublisher(lambda: RespConnection.open(redis_url), books, IngestMetrics())


@pytest.mark.integration
async def test_a_refused_write_is_sent_again_before_anything_newer(redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=False)
    books, pub = _empty_book_and_publisher(redis_url)
    await r.set(PRICE_TICKS, "not a stream")  # every XADD fails (WRONGTYPE)
    _tick_of(books, pub, T1, "0.10")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await pub.flush()
    _tick_of(books, pub, T1, "0.11")
    await r.delete(PRICE_TICKS)
    await pub.flush()
    rows: Any = await r.xrange(PRICE_TICKS)
    assert [mpb.PriceTick.FromString(f[b"p"]).best_bid for _i, f in rows] == ["0.1", "0.11"]
    pub.close()
    await r.aclose()


@pytest.mark.integration
async def test_running_publisher_writes_without_flush_calls_and_survives_a_killed_connection(redis_url: str) -> None:
    r = aioredis.from_url(redis_url, decode_responses=False)
    books, pub = _empty_book_and_publisher(redis_url)
    task = asyncio.create_task(pub.run())
    try:
        for step in range(10):
            _tick_of(books, pub, T1, f"0.{10 + step}")
        await eventually(lambda: _has(r, 10))
        await r.client_kill_filter(_type="normal", skipme=True)  # drops the publisher's connection
        for step in range(10, 20):
            _tick_of(books, pub, T1, f"0.{10 + step}")
        await eventually(lambda: _has(r, 20))
        book = await read_book(r, T1)
        assert book is not None and book.best_bid == D("0.29")
        rows: Any = await r.xrange(PRICE_TICKS)
        assert [mpb.PriceTick.FromString(f[b"p"]).best_bid for _i, f in rows] == [f"0.{n}".rstrip("0")
                                                                                  for n in range(10, 30)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await r.aclose()


def last_trade(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_type": "last_trade_price", "asset_id": T1, "market": "0x" + "AB" * 32,
                            "price": "0.62", "size": "125.5", "side": "BUY", "timestamp": "1700000000123"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _ABSENT}


_ABSENT = object()


@pytest.mark.parametrize("fields", [
    {}, {"side": "SELL"}, {"side": "sell"}, {"side": _ABSENT}, {"side": "HOLD"}, {"side": 1},
    {"price": "0.5"}, {"price": 0.5}, {"price": "1.5"}, {"price": "x"}, {"price": _ABSENT},
    {"size": "0"}, {"size": "10"}, {"size": 3}, {"size": "-1"}, {"size": "abc"}, {"size": None}, {"size": ""},
    {"size": _ABSENT},
    {"asset_id": ""}, {"asset_id": 7}, {"asset_id": "9" * 101}, {"asset_id": "a\x00b"}, {"asset_id": "é"},
    {"market": _ABSENT}, {"market": 5}, {"market": "0x\x00ab"}, {"market": "m" * 2001}, {"market": "Ü"},
    {"timestamp": "1.5e12"}, {"timestamp": "-1"}, {"timestamp": _ABSENT}, {"timestamp": "99999999999999999"},
])
def test_the_last_trade_fast_path_agrees_with_the_checked_parser(fields: dict[str, Any]) -> None:
    clob.parse_event(last_trade())  # "0.62" and friends cached
    clob.parse_event(change(size="10"))  # a size cached too
    d = last_trade(**fields)
    assert outcome(lambda: clob.parse_event(d)) == outcome(lambda: clob.last_trade_checked(d))


@pytest.mark.parametrize("market", ["0x" + "Ab" * 32, "", None, 5, "0x\x00ab", "m" * 2001, "Ü", "m" * 2000])
def test_a_price_change_reads_its_market_as_the_checked_reader_does(market: Any) -> None:
    d = change()
    d["market"] = market
    assert outcome(lambda: price_change(d).market) == outcome(lambda: model.text(d, "market").lower())
