"""A book out of sync is rebuilt from a snapshot plus the level changes received after it: a REST ``/book`` read
before a change the socket has already delivered must not undo that change (pure)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

from common.marketstate import BookSnapshot
from common.resp import RespConnection
from common.restget import Page
from services.ingest import clob
from services.ingest.bookpub import BookPublisher
from services.ingest.books import BookState
from services.ingest.clob_feed import ClobHandler
from services.ingest.marketsync import MarketSync
from services.ingest.metrics import IngestMetrics
from tests.ingest.test_feed_trust import MARKET, T1, T2, _book, _change, _state
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
Levels = tuple[tuple[Decimal, Decimal], ...]


def _levels(s: BookState, asset: str) -> tuple[Levels, Levels]:
    snap = s.books[asset].snapshot(50)
    return snap.bids, snap.asks


def test_a_rest_snapshot_older_than_changes_received_while_out_of_sync_keeps_those_changes() -> None:
    """After a reconnect the book waits for a snapshot; the socket meanwhile says the 0.52 ask is gone and a 0.51
    bid of 7 arrived (venue time 3000). The REST /book asked for earlier (venue time 2000) answers after that: the
    book must not come back with the removed 0.52 ask and without the 0.51 bid."""
    s = _state(T1)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.50", "10")], [("0.53", "4"), ("0.52", "10")])), 1_000)
    s.desync_all()  # a reconnect: out of sync until the next snapshot
    s.apply(clob.parse_event(_change(3_000,
                                     {"asset_id": T1, "price": "0.52", "size": "0", "side": "SELL",
                                      "best_bid": "0.51", "best_ask": "0.53"},
                                     {"asset_id": T1, "price": "0.51", "size": "7", "side": "BUY",
                                      "best_bid": "0.51", "best_ask": "0.53"})), 3_000)
    rest = clob.parse_event(_book(T1, 2_000, [("0.50", "10")], [("0.53", "4"), ("0.52", "10")]))
    s.apply(rest, 3_100)

    bids, asks = _levels(s, T1)
    assert s.books[T1].synced
    assert bids == ((D("0.51"), D("7")), (D("0.50"), D("10"))), f"bids {bids}"
    assert asks == ((D("0.53"), D("4")),), f"asks {asks}"
    tick = s.price_tick(T1, 0, 1)
    assert (tick.best_bid, tick.best_ask) == ("0.51", "0.53")


def test_only_changes_at_or_after_the_snapshot_are_laid_over_it() -> None:
    """Changes older than the snapshot are in it (laid over it, they would undo what it shows); newer ones are not."""
    s = _state(T1)
    s.desync_all()
    s.apply(clob.parse_event(_change(1_500, {"asset_id": T1, "price": "0.45", "size": "3", "side": "BUY"})), 1_500)
    s.apply(clob.parse_event(_change(2_500, {"asset_id": T1, "price": "0.46", "size": "0", "side": "BUY"})), 2_500)
    # the snapshot (venue time 2000) has the 0.45 bid removed again and a 0.46 bid the 2500 change removes
    s.apply(clob.parse_event(_book(T1, 2_000, [("0.46", "2")], [("0.60", "1")])), 2_600)
    bids, _asks = _levels(s, T1)
    assert bids == (), f"bids {bids}"


async def _no_connection() -> RespConnection:
    raise AssertionError("not used")


class _SlowRest:
    """CLOB ``GET /book``: the body read at venue time 2000, answered once the socket delivered a newer change."""

    def __init__(self, handler: ClobHandler, frame: bytes) -> None:
        self.handler = handler
        self.frame = frame

    async def book(self, asset_id: str) -> Page:
        self.handler.handle(self.frame, 3_000 * 1_000_000)  # arrives while the REST answer is on its way
        return Page(_book(asset_id, 2_000, [("0.50", "10")], [("0.53", "4"), ("0.52", "10")]), 3_100 * 1_000_000)


def test_a_resync_answered_after_a_newer_change_stores_the_book_with_that_change() -> None:
    """Through the feed's handler and the REST resync: the stored book (what the executor prices on)."""
    s = _state(T1, T2)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.50", "10")], [("0.53", "4"), ("0.52", "10")])), 1_000)
    handler = ClobHandler(s, lambda _t, _ns: None, IngestMetrics())
    # a mirrored change: T1's 0.52 ask taken, T2's 0.48 bid with it (T2 has no book yet)
    frame = orjson.dumps(_change(3_000,
                                 {"asset_id": T1, "price": "0.52", "size": "0", "side": "SELL",
                                  "best_bid": "0.50", "best_ask": "0.53"},
                                 {"asset_id": T2, "price": "0.48", "size": "0", "side": "BUY",
                                  "best_bid": "0.47", "best_ask": "0.50"}))
    s.desync_all()
    sync = MarketSync(_SlowRest(handler, frame), s, BookPublisher(_no_connection, s, IngestMetrics()), None,  # type: ignore[arg-type]
                      IngestMetrics())
    sync.resync(T1)
    assert asyncio.run(sync.fetch("book", T1))
    stored = BookSnapshot.from_json(s.books[T1].snapshot_json(50, s.session))
    assert stored.snapshot and stored.asks == ((D("0.53"), D("4")),), f"asks {stored.asks}"
    assert stored.best_ask == D("0.53")


def test_a_rest_snapshot_older_than_a_tick_size_change_does_not_bring_the_old_tick_back() -> None:
    """The tick went 0.01 → 0.001 at venue time 3000 while the book was out of sync; a REST /book read at 2000
    (tick 0.01) answered after it must not publish 0.01 as a tick-size change: orders at it would be refused."""
    s = _state(T1)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.95", "10")], [("0.97", "10")])), 1_000)
    s.desync_all()
    s.apply(clob.parse_event({"event_type": "tick_size_change", "asset_id": T1, "market": MARKET,
                              "old_tick_size": "0.01", "new_tick_size": "0.001", "timestamp": "3000"}), 3_000)
    [touched] = s.apply(clob.parse_event(_book(T1, 2_000, [("0.95", "10")], [("0.97", "10")])), 3_100)
    assert s.books[T1].tick_size == D("0.001") and s.price_tick(T1, touched.kind, 1).tick_size == "0.001"
    assert touched.kind == mpb.TICK_KIND_BOOK  # not a tick-size change back to 0.01


def test_a_rest_snapshot_older_than_a_trade_print_does_not_bring_the_old_last_trade_back() -> None:
    """A trade at 0.45 printed at venue time 3000; a REST /book read at 2000 (last trade 0.40) answered after it
    must not move the last trade back to 0.40 (a stop-loss at 0.42 watching the last trade would fire on it)."""
    s = _state(T1)
    s.apply(clob.parse_event({**_book(T1, 1_000, [("0.40", "10")], [("0.50", "10")]), "last_trade_price": "0.40"}),
            1_000)
    s.desync_all()
    s.apply(clob.parse_event({"event_type": "last_trade_price", "asset_id": T1, "market": MARKET, "price": "0.45",
                              "side": "BUY", "size": "5", "timestamp": "3000"}), 3_000)
    s.apply(clob.parse_event({**_book(T1, 2_000, [("0.40", "10")], [("0.50", "10")]), "last_trade_price": "0.40"}),
            3_100)
    assert s.price_tick(T1, mpb.TICK_KIND_BOOK, 1).last_trade_price == "0.45"
