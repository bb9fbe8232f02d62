"""Market state round trips through real Redis."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from common.marketstate import (
    RESOLVED_WINNER,
    BookSnapshot,
    FeedBeat,
    MarketInfo,
    mark_from_json,
    mark_price,
    read_book,
    read_market,
    write_book,
    write_market,
)

D = Decimal


@pytest.mark.integration
async def test_book_and_market_round_trip(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    book = BookSnapshot("123", "0xc", ((D("0.48"), D("10")), (D("0.47"), D("5"))), ((D("0.5"), D("7")),),
                        D("0.01"), 1000, 2000, D("0.49"))
    await write_book(r, book)
    got = await read_book(r, "123")
    assert got == book and got.best_bid == D("0.48") and got.best_ask == D("0.5")
    assert got.is_stale(now_ms=2000 + 5001, max_age_ms=5000) and not got.is_stale(2100, 5000)
    assert await read_book(r, "nope") is None
    info = MarketInfo("123", "0xc", D("0.001"), D("5"), neg_risk=True, market_slug="m", updated_ms=7)
    await write_market(r, info)
    assert await read_market(r, "123") == info
    await r.aclose()


@pytest.mark.parametrize(("bid", "ask", "last", "mark"), [
    ("0.48", "0.5", "0.1", "0.49"),  # mid
    ("0.48", None, "0.1", "0.48"),  # one-sided: the bid
    (None, "0.5", "0.1", "0.1"),  # no bid: the last trade
    (None, "0.5", None, None),
    (None, None, None, None),
])
def test_the_mark_is_the_mid_else_the_bid_else_the_last_trade(bid: str | None, ask: str | None, last: str | None,
                                                              mark: str | None) -> None:
    book = BookSnapshot("1", "0xc", ((D(bid), D(1)), (D("0.01"), D(1))) if bid else (),
                        ((D(ask), D(1)), (D("0.99"), D(1))) if ask else (), D("0.01"), 5, 7,
                        D(last) if last else None)
    expected = None if mark is None else D(mark)
    assert mark_price(book.best_bid, book.best_ask, book.last_trade_price) == expected
    assert book.mark == expected
    assert mark_from_json(book.to_json()) == (expected, 7)


def test_a_level_of_size_0_is_no_best_price() -> None:
    """A top level holding nothing priced a SELL's ceiling and valued positions at 0.60 over a real bid of 0.49."""
    book = BookSnapshot("1", "0xc", ((D("0.6"), D(0)), (D("0.49"), D(10))), ((D("0.7"), D(0)), (D("0.51"), D(3))),
                        D("0.01"), 5, 7)
    assert (book.best_bid, book.best_ask, book.mark) == (D("0.49"), D("0.51"), D("0.5"))
    assert mark_from_json(book.to_json()) == (D("0.5"), 7)
    empty = BookSnapshot("1", "0xc", ((D("0.6"), D(0)),), (), D("0.01"), 5, 7)
    assert (empty.best_bid, empty.mark, mark_from_json(empty.to_json())[0]) == (None, None, None)


@pytest.mark.parametrize(("fields", "closed", "accepting"), [
    ({}, False, True),
    ({"closed": "1"}, True, True),
    ({"accepting_orders": "0"}, False, False),
    ({"resolved_winner": "456"}, True, False),  # resolved: closed whatever the other fields say
    ({"resolved_winner": "456", "closed": "0", "accepting_orders": "1"}, True, False),
    ({"resolved_winner": ""}, False, True),
])
def test_a_resolved_market_stays_closed(fields: dict[str, str], closed: bool, accepting: bool) -> None:
    info = MarketInfo.from_hash({"asset_id": "123", "tick_size": "0.01", **fields})
    assert (info.closed, info.accepting_orders) == (closed, accepting)
    assert info.resolved_winner == fields.get(RESOLVED_WINNER, "")


@pytest.mark.integration
async def test_a_later_write_of_the_market_does_not_reopen_a_resolved_one(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    info = MarketInfo("123", "0xc", D("0.01"), D("5"))
    await write_market(r, replace(info, closed=True, accepting_orders=False, extra={RESOLVED_WINNER: "123"}))
    await write_market(r, info)  # e.g. the router's refresh from a CLOB REST answer lagging the resolution
    got = await read_market(r, "123")
    assert got is not None and got.closed and not got.accepting_orders and got.resolved_winner == "123"
    await r.aclose()


BEAT = FeedBeat("p.1", 10_000)


@pytest.mark.parametrize(("snapshot", "session", "updated_ms", "beat", "now_ms", "age_ms"), [
    (True, "", 9_000, None, 10_000, 1_000),  # a REST snapshot: confirmed when it was taken
    (True, "", 9_000, BEAT, 10_000, 1_000),  # whatever the feed does
    (True, "p.1", 2_000, BEAT, 12_000, 2_000),  # quiet book of the live session: confirmed by the beat
    (True, "p.1", 11_000, BEAT, 12_000, 1_000),  # changed after the last beat
    (True, "p.1", 9_000, FeedBeat("p.2", 10_000), 10_000, None),  # the feed moved on (a reconnect, a restart)
    (True, "p.1", 9_000, None, 10_000, None),  # no feed beat at all
    (False, "p.1", 9_000, BEAT, 10_000, None),  # never snapshotted (or out of sync): no levels known
    (False, "", 9_000, None, 10_000, None),
])
def test_a_books_age_is_how_long_ago_the_venue_confirmed_it(snapshot: bool, session: str, updated_ms: int,
                                                          beat: FeedBeat | None, now_ms: int,
                                                          age_ms: int | None) -> None:
    book = BookSnapshot("1", "", (), (), D("0.01"), 0, updated_ms, None, snapshot, session)
    assert book.age_ms(now_ms, beat) == age_ms
    assert book.fresh(now_ms, 5_000, beat) is (age_ms is not None and age_ms <= 5_000)
    assert book.is_stale(now_ms, 5_000, beat) is not book.fresh(now_ms, 5_000, beat)
    assert BookSnapshot.from_json(book.to_json()) == book


@pytest.mark.parametrize("raw", [None, b"", b"{", b"[]", b'{"session": "", "aliveMs": 1}', b'{"session": "a"}',
                                 b'{"session": "a", "aliveMs": "1"}', b'{"session": 1, "aliveMs": 1}',
                                 b'{"session": "a", "aliveMs": true}'])
def test_a_beat_not_understood_is_no_beat(raw: bytes | None) -> None:
    assert FeedBeat.from_json(raw) is None


def test_a_book_stored_before_freshness_was_recorded_reads_as_a_rest_snapshot() -> None:
    old = b'{"assetId":"1","conditionId":"","bids":[],"asks":[["0.5","1"]],"tickSize":"0.01","venueTimeMs":1,' \
          b'"updatedMs":7,"lastTradePrice":""}'
    book = BookSnapshot.from_json(old)
    assert (book.snapshot, book.session, book.age_ms(10, None)) == (True, "", 3)
    assert FeedBeat.from_json(BEAT.to_json()) == BEAT
