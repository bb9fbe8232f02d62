"""Book state from snapshots and deltas (pure)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from common.marketstate import BookSnapshot, market_key
from common.resp import RespConnection
from common.restget import Page
from services.ingest import clob, levelbytes
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.marketsync import MarketSync
from services.ingest.metrics import IngestMetrics
from tradingtools.market.v1 import market_pb2 as mpb

FIXTURES = Path(__file__).parent / "fixtures"
T1 = "31415926535897932384626433832795028841971693993751058209749445923078164062862"
T2 = "27182818284590452353602874713526624977572470936999595749669676277240766303535"
D = Decimal


def msg(name: str) -> clob.ClobMsg:
    return clob.parse_event(orjson.loads((FIXTURES / name).read_bytes()))


def state(*assets: str) -> BookState:
    s = BookState()
    for a in assets:
        s.track(a)
    return s


def test_snapshot_is_best_first_and_best_is_last_on_the_wire() -> None:
    s = state(T1)
    [touched] = s.apply(msg("clob_book.json"), 1000)
    assert touched.emit and touched.kind == mpb.TICK_KIND_BOOK
    snap = s.books[T1].snapshot(10)
    assert snap.best_bid == D("0.6") and snap.best_ask == D("0.62")
    assert [p for p, _ in snap.bids] == [D("0.6"), D("0.59"), D("0.58")]
    assert [p for p, _ in snap.asks] == [D("0.62"), D("0.63"), D("0.64")]
    assert s.books[T1].snapshot(1).bids == ((D("0.6"), D("30")),)
    tick = s.price_tick(T1, touched.kind, 5)
    assert (tick.best_bid, tick.best_ask, tick.mid, tick.last_trade_price, tick.tick_size) == (
        "0.6", "0.62", "0.61", "0.61", "0.01")


def test_v2_delta_removes_level_and_untracked_assets_are_ignored() -> None:
    s = state(T1)
    s.apply(msg("clob_book.json"), 1000)
    touched = s.apply(msg("clob_price_change_v2.json"), 1001)
    assert [t.asset_id for t in touched] == [T1]  # T2 is not followed
    assert s.books[T1].best_bid == D("0.59") and touched[0].emit


def test_v1_and_v0_deltas() -> None:
    s = state(T1)
    s.apply(msg("clob_book.json"), 1000)
    s.apply(msg("clob_price_change_v1.json"), 1001)
    book = s.books[T1]
    assert book.best_bid == D("0.61") and book.best_ask == D("0.63")
    s.apply(msg("clob_price_change_v0.json"), 1002)
    assert book.asks[D("0.65")] == D("9")


def test_depth_only_change_does_not_emit_a_tick() -> None:
    s = state(T1)
    s.apply(msg("clob_book.json"), 1000)
    change = clob.PriceChangeMsg("", (clob.LevelChange(T1, "BUY", D("0.58"), D("1")),), 2**41)  # after the snapshot
    [touched] = s.apply(change, 1001)
    assert not touched.emit and s.books[T1].bids[D("0.58")] == D("1")


def test_deltas_before_a_snapshot_use_the_venue_hints() -> None:
    s = state(T1)
    s.apply(msg("clob_price_change_v2.json"), 1000)
    assert (s.books[T1].best_bid, s.books[T1].best_ask) == (D("0.59"), D("0.62"))
    assert s.books[T1].snapshot(5).bids == ()
    s.apply(clob.BestBidAskMsg(T1, "", None, D("0.7"), 1), 1001)
    assert s.books[T1].best_ask == D("0.7")


def test_tick_size_last_trade_resolution() -> None:
    s = state(T1, T2)
    s.apply(msg("clob_book.json"), 1000)
    [t] = s.apply(msg("clob_tick_size_change.json"), 1001)
    assert t.kind == mpb.TICK_KIND_TICK_SIZE_CHANGE and t.emit and s.books[T1].tick_size == D("0.001")
    [t] = s.apply(msg("clob_last_trade_price.json"), 1002)
    assert t.emit and s.books[T1].last_trade_price == D("0.62")
    resolved = s.apply(msg("clob_market_resolved.json"), 1003)
    assert [(r.asset_id, r.kind) for r in resolved] == [(T1, mpb.TICK_KIND_MARKET_RESOLVED),
                                                         (T2, mpb.TICK_KIND_MARKET_RESOLVED)]
    assert s.price_tick(T2, mpb.TICK_KIND_MARKET_RESOLVED, 0).winning_asset_id == T1


def test_stale_once_then_fresh_again() -> None:
    s = state(T1)
    s.apply(msg("clob_book.json"), 1000)
    assert s.mark_stale(1500, 1000) == []
    [t] = s.mark_stale(2001, 1000)
    assert t.kind == mpb.TICK_KIND_STALE and s.price_tick(T1, t.kind, 0).stale
    assert s.mark_stale(9000, 1000) == []  # only once
    [t] = s.apply(msg("clob_last_trade_price.json"), 9001)
    assert t.emit and not s.books[T1].stale


def test_reconnect_desyncs_until_the_next_snapshot() -> None:
    s = state(T1)
    s.apply(msg("clob_book.json"), 1000)
    s.desync_all()
    assert s.books[T1].snapshot(5).bids == ()
    s.apply(msg("clob_book.json"), 1001)
    assert s.books[T1].synced


# level changes of a book that never crosses (bids below 0.50, asks above): a crossed book is out of sync
levels_st = st.lists(st.one_of(
    st.tuples(st.just("BUY"), st.decimals(min_value=D("0.01"), max_value=D("0.49"), places=2),
              st.decimals(min_value=D(0), max_value=D(1000), places=2)),
    st.tuples(st.just("SELL"), st.decimals(min_value=D("0.51"), max_value=D("0.99"), places=2),
              st.decimals(min_value=D(0), max_value=D(1000), places=2))), max_size=60)


@given(levels_st)
def test_property_snapshot_is_sorted_best_first_without_empty_levels(changes: list[tuple[str, D, D]]) -> None:
    s = state(T1)
    s.apply(clob.BookMsg(T1, "", (), (), None, None, 0), 0)
    expected: dict[tuple[str, D], D] = {}
    for side, price, size in changes:
        s.apply(clob.PriceChangeMsg("", (clob.LevelChange(T1, side, price, size),), 1), 1)
        if size == 0:
            expected.pop((side, price), None)
        else:
            expected[(side, price)] = size
    snap = s.books[T1].snapshot(1000)
    assert [p for p, _ in snap.bids] == sorted((p for (sd, p) in expected if sd == "BUY"), reverse=True)
    assert [p for p, _ in snap.asks] == sorted(p for (sd, p) in expected if sd == "SELL")
    assert all(size > 0 for _, size in (*snap.bids, *snap.asks))


@given(st.lists(st.tuples(st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2),
                          st.decimals(min_value=D(0), max_value=D(100), places=1)), max_size=20),
       levels_st, st.integers(min_value=1, max_value=5))
def test_property_levels_best_prices_and_depth_match_a_naive_book(
        snapshot: list[tuple[D, D]], changes: list[tuple[str, D, D]], depth: int) -> None:
    s = state(T1)
    bids = tuple((p, z) for p, z in snapshot if p < D("0.5"))
    asks = tuple((p, z) for p, z in snapshot if p > D("0.5"))
    s.apply(clob.BookMsg(T1, "", bids, asks, None, None, 0), 0)
    model = {"BUY": {p: z for p, z in bids if z != 0}, "SELL": {p: z for p, z in asks if z != 0}}
    for side, price, size in changes:
        s.apply(clob.PriceChangeMsg("", (clob.LevelChange(T1, side, price, size),), 1), 1)
        if size == 0:
            model[side].pop(price, None)
        else:
            model[side][price] = size
        book = s.books[T1]
        assert book.best_bid == (max(model["BUY"]) if model["BUY"] else None)
        assert book.best_ask == (min(model["SELL"]) if model["SELL"] else None)
    snap = s.books[T1].snapshot(depth)
    assert list(snap.bids) == sorted(model["BUY"].items(), reverse=True)[:depth]
    assert list(snap.asks) == sorted(model["SELL"].items())[:depth]
    assert s.books[T1].bids == model["BUY"] and s.books[T1].asks == model["SELL"]


@given(st.lists(st.tuples(st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=3),
                          st.decimals(min_value=D(0), max_value=D(10_000), places=2)), max_size=20),
       levels_st, st.integers(min_value=1, max_value=8), st.sampled_from(["", "0x" + "ab" * 32, 'we"ird\\id']),
       st.one_of(st.none(), st.decimals(min_value=D("0.001"), max_value=D("0.999"), places=3)),
       st.integers(min_value=0, max_value=2**62), st.sampled_from(["", "9f3a.1", 'se"ss\\ion']),
       st.lists(st.tuples(st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2),
                          st.decimals(min_value=D(0), max_value=D(20), places=0)), max_size=20))
def test_property_stored_book_bytes_are_the_snapshot_json(
        snapshot: list[tuple[D, D]], changes: list[tuple[str, D, D]], depth: int, market: str,
        last: D | None, venue_ms: int, session: str, again: list[tuple[D, D]]) -> None:
    s = state(T1)
    book = s.books[T1]
    assert book.snapshot_json(depth, session) == book.snapshot(depth, session).to_json()  # not synced: no levels
    assert not BookSnapshot.from_json(book.snapshot_json(depth, session)).snapshot
    s.apply(clob.BookMsg(T1, market, tuple(snapshot), tuple(reversed(snapshot)), D("0.001"), last, venue_ms), 7)
    assert book.snapshot_json(depth, session) == book.snapshot(depth, session).to_json()
    stored = BookSnapshot.from_json(book.snapshot_json(depth, session))
    assert stored.snapshot and stored.session == session
    for i, (side, price, size) in enumerate(changes):
        s.apply(clob.PriceChangeMsg(market if i % 3 else "0x" + "cd" * 32,
                                    (clob.LevelChange(T1, side, price, size),), venue_ms + i), 8 + i)
        assert book.snapshot_json(depth, session) == book.snapshot(depth, session).to_json()
        assert book.snapshot_json(1000) == book.snapshot(1000).to_json()
    # a later snapshot, sharing some levels with the book it replaces
    s.apply(clob.BookMsg(T1, market, tuple(again), tuple(reversed(again)), D("0.001"), last,
                         venue_ms + len(changes) + 1), 9 + len(changes))
    assert book.snapshot_json(1000, session) == book.snapshot(1000, session).to_json()


def test_a_snapshot_keeps_the_stored_bytes_of_the_levels_it_repeats() -> None:
    s = state(T1)
    book = s.books[T1]
    s.apply(_book_frame(T1, 1, [("0.40", "10"), ("0.45", "5")], [("0.60", "7"), ("0.55", "3")]), 1)
    best_bid, next_bid, best_ask = book._bid_js[0], book._bid_js[1], book._ask_js[0]
    levelbytes.LEVEL_JSON.clear()
    s.apply(_book_frame(T1, 2, [("0.40", "10"), ("0.45", "6")], [("0.60", "7"), ("0.55", "3")]), 2)
    assert book._bid_js[1] is next_bid and book._ask_js[0] is best_ask  # unchanged: the book's own bytes
    assert book._bid_js[0] == b'["0.45","6"]' != best_bid
    assert book.snapshot_json(10) == book.snapshot(10).to_json()


def _book_frame(asset: str, ts: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]],
                **extra: str) -> clob.ClobMsg:
    """A ``book`` event in wire order (bids ascending, asks descending: the best is last)."""
    return clob.parse_event({"event_type": "book", "asset_id": asset, "market": "0x" + "c" * 64,
                             "timestamp": str(ts), "hash": f"h{ts}",
                             "bids": [{"price": p, "size": z} for p, z in bids],
                             "asks": [{"price": p, "size": z} for p, z in asks], **extra})


def test_a_snapshot_older_than_the_book_is_ignored() -> None:
    s = state(T1)
    s.apply(_book_frame(T1, 1_790_000_000_000, [("0.48", "10"), ("0.50", "10")], [("0.54", "5"), ("0.52", "5")]), 1)
    s.apply(clob.parse_event({"event_type": "price_change", "market": "0x" + "c" * 64, "timestamp": "1790000005000",
                              "price_changes": [{"asset_id": T1, "price": "0.51", "size": "100", "side": "BUY",
                                                 "best_bid": "0.51", "best_ask": "0.52"}]}), 2)
    # a REST /book resync asked for before that delta, answered after it (venue time 4 s older)
    assert s.apply(_book_frame(T1, 1_790_000_001_000, [("0.50", "10")], [("0.52", "5")]), 3) == []
    assert s.books[T1].best_bid == D("0.51")
    s.desync_all()  # after a reconnect any snapshot is the base again
    s.apply(_book_frame(T1, 1_790_000_001_000, [("0.50", "10")], [("0.52", "5")]), 4)
    assert s.books[T1].best_bid == D("0.50")


def test_a_snapshot_with_a_new_tick_size_is_published_as_a_tick_size_change() -> None:
    """A reconnect can miss the venue's tick_size_change; the fresh snapshot carries the new tick."""
    s = state(T1)
    [first] = s.apply(_book_frame(T1, 1, [("0.95", "10")], [("0.97", "10")], tick_size="0.01"), 1)
    assert first.kind == mpb.TICK_KIND_BOOK
    s.desync_all()
    [again] = s.apply(_book_frame(T1, 2, [("0.965", "10")], [("0.967", "10")], tick_size="0.001"), 2)
    assert (again.kind, again.emit, s.books[T1].tick_size) == (mpb.TICK_KIND_TICK_SIZE_CHANGE, True, D("0.001"))
    [same] = s.apply(_book_frame(T1, 3, [("0.966", "10")], [("0.967", "10")], tick_size="0.001"), 3)
    assert same.kind == mpb.TICK_KIND_BOOK


def test_only_a_tick_size_the_venue_sent_is_known() -> None:
    s = state(T1)
    s.apply(_book_frame(T1, 1, [("0.997", "10")], [("0.999", "10")]), 1)  # a book frame without tick_size
    assert not s.books[T1].tick_known
    assert not BookSnapshot.from_json(s.books[T1].snapshot_json(10)).tick_known
    s.apply(_book_frame(T1, 2, [("0.997", "10")], [("0.999", "10")], tick_size="0.001"), 2)
    assert s.books[T1].tick_known
    stored = BookSnapshot.from_json(s.books[T1].snapshot_json(10))  # what the executor prices on
    assert (stored.tick_known, stored.tick_size) == (True, D("0.001"))


class _Rest:
    """CLOB ``GET /markets/{condition_id}`` of one market whose tick is 0.001."""

    async def market(self, condition_id: str) -> Page:
        return Page({"condition_id": condition_id, "minimum_tick_size": 0.001, "minimum_order_size": 5,
                     "tokens": [{"token_id": T1, "outcome": "Yes"}, {"token_id": T2, "outcome": "No"}]}, 0)


class _Hashes:
    def __init__(self) -> None:
        self.h: dict[str, dict[str, str]] = {}

    async def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.h[key] = dict(mapping)

    async def eval(self, _script: str, _numkeys: int, key: str, _asked_ms: str, *pairs: str) -> int:
        self.h[key] = dict(zip(pairs[::2], pairs[1::2], strict=True))
        return 0


def test_market_info_keeps_its_tick_unless_the_venue_sent_another_on_the_socket() -> None:
    s = state(T1, T2)
    s.apply(_book_frame(T1, 1, [("0.997", "10")], [("0.999", "10")]), 1)  # no tick_size: the default stands in
    s.apply(_book_frame(T2, 1, [("0.001", "10")], [("0.004", "10")], tick_size="0.002"), 1)
    redis = _Hashes()
    sync = MarketSync(_Rest(), s, BookPublisher(_no_connection, s, IngestMetrics()), redis, IngestMetrics())
    asyncio.run(sync._market("0x" + "c" * 64))
    assert redis.h[market_key(T1)]["tick_size"] == "0.001"  # REST's, not the 0.01 default
    assert redis.h[market_key(T2)]["tick_size"] == "0.002"  # the socket's is newer


async def _no_connection() -> RespConnection:
    raise AssertionError("not used")


def test_best_bid_ask_of_an_empty_side_is_no_price() -> None:
    s = state(T1)
    s.apply(clob.parse_event({"event_type": "best_bid_ask", "market": "0x" + "c" * 64, "asset_id": T1,
                              "best_bid": "0", "best_ask": "0.04", "spread": "0.04", "timestamp": "1"}), 1)
    tick = s.price_tick(T1, mpb.TICK_KIND_BEST_BID_ASK, 0)
    assert (tick.best_bid, tick.best_ask, tick.mid) == ("", "0.04", "")
    s.apply(clob.parse_event({"event_type": "best_bid_ask", "market": "0x" + "c" * 64, "asset_id": T1,
                              "best_bid": "0.97", "best_ask": "1", "spread": "0.03", "timestamp": "2"}), 2)
    tick = s.price_tick(T1, mpb.TICK_KIND_BEST_BID_ASK, 0)
    assert (tick.best_bid, tick.best_ask, tick.mid) == ("0.97", "", "")


async def test_following_a_changed_asset_set_keeps_the_books_of_assets_still_followed() -> None:
    from services.ingest.clob_feed import ClobFeed, ClobHandler

    books = BookState()
    feed = ClobFeed("ws://127.0.0.1:1", ClobHandler(books, lambda touched, ns: None, IngestMetrics()), IngestMetrics())
    await feed.set_assets({"a", "b"})
    kept = books.books["b"]
    await feed.set_assets({"b", "c"})
    assert sorted(books.books) == ["b", "c"] and books.books["b"] is kept  # a kept book is not reset
    await feed.set_assets(set())
    assert books.books == {}
    await feed.change_assets({"a", "b"}, set())
    kept = books.books["a"]
    await feed.change_assets({"c", "d"}, {"b", "d"})  # an asset both added and removed is not followed
    assert sorted(books.books) == ["a", "c"] and books.books["a"] is kept and feed.wanted == {"a", "c"}


def test_books_without_a_snapshot_are_listed_for_rest_once_the_grace_is_over() -> None:
    s = state(T1, T2)
    assert s.awaiting_snapshot(1_000, 500) == []  # first seen waiting now
    s.apply(_book_frame(T1, 1, [("0.4", "1")], [("0.6", "1")]), 1_200)
    assert s.awaiting_snapshot(1_400, 500) == [] and s.awaiting_snapshot(1_600, 500) == [T2]
    s.desync_all()  # a reconnect: every book waits for its snapshot again, the grace starts over
    assert s.awaiting_snapshot(2_000, 500) == [] and s.awaiting_snapshot(2_600, 500) == [T1, T2]


def test_a_lost_feed_stores_every_book_again_and_ticks_stale_once() -> None:
    s = state(T1, T2)
    s.apply(_book_frame(T1, 1, [("0.4", "1")], [("0.6", "1")]), 1_000)
    s.mark_stale(100_000, 30_000)  # both quiet: stale (one STALE tick each)
    s.apply(_book_frame(T1, 2, [("0.4", "1")], [("0.6", "1")]), 100_001)  # T1 fresh again
    touched = s.feed_lost()
    assert [(t.asset_id, t.kind, t.emit) for t in touched] == [
        (T1, mpb.TICK_KIND_STALE, True), (T2, mpb.TICK_KIND_STALE, False)]  # T2 was stale already: no tick
    assert not any(b.synced for b in s.books.values())
