"""Books are not served as fresh when they cannot be trusted (the socket dropped, a reconnect, a delta older than
the snapshot, a crossed book the venue contradicts, a change message that could not be applied), and one fill
seen through both RTDS subscriptions without topic/type is one leader trade."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.retry import Backoff
from services.ingest import clob
from services.ingest.books import BookState, Touched
from services.ingest.clob_feed import ClobFeed, ClobHandler
from services.ingest.identity import Identified
from services.ingest.metrics import IngestMetrics
from services.ingest.rtds_feed import RtdsHandler
from tradingtools.market.v1 import market_pb2 as mpb

FIXTURES = Path(__file__).parent / "fixtures"
T1 = "31415926535897932384626433832795028841971693993751058209749445923078164062862"
T2 = "27182818284590452353602874713526624977572470936999595749669676277240766303535"
MARKET = "0x" + "c" * 64
LEADER = "0x5a1ce0000000000000000000000000000000beef"
D = Decimal


def _book(asset: str, ts: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> dict[str, Any]:
    """A ``book`` event in wire order (bids ascending, asks descending: best = last)."""
    return {"event_type": "book", "asset_id": asset, "market": MARKET, "timestamp": str(ts), "hash": f"h{ts}",
            "bids": [{"price": p, "size": z} for p, z in bids],
            "asks": [{"price": p, "size": z} for p, z in asks], "tick_size": "0.01"}


def _change(ts: int, *changes: dict[str, str]) -> dict[str, Any]:
    return {"event_type": "price_change", "market": MARKET, "timestamp": str(ts), "price_changes": list(changes)}


def _state(*assets: str) -> BookState:
    s = BookState()
    for a in assets:
        s.track(a)
    return s


# --- 1. a dropped book socket leaves every book served as fresh -----------------------------------------------


@pytest.mark.integration
async def test_books_are_not_served_fresh_after_the_book_socket_drops() -> None:
    """The CLOB socket closes and does not come back quickly: every book is stale at once (a STALE tick each),
    not after the 30 s age check."""
    from websockets.asyncio.server import serve

    async def venue(ws: Any) -> None:
        await ws.recv()  # the subscription
        await ws.send(orjson.dumps(_book(T1, int(time.time() * 1000), [("0.50", "10")], [("0.52", "10")])).decode())
        await asyncio.sleep(0.3)  # then the venue drops the socket

    server = await serve(venue, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    books = BookState()
    touched: list[Touched] = []
    metrics = IngestMetrics()
    feed = ClobFeed(f"ws://127.0.0.1:{port}", ClobHandler(books, lambda t, _ns: touched.append(t), metrics),
                    metrics, stall_s=30.0, backoff=Backoff(10.0, 10.0))  # reconnect takes a while
    await feed.set_assets({T1})
    task = asyncio.create_task(feed.run())
    try:
        for _ in range(100):
            if books.books[T1].synced:
                break
            await asyncio.sleep(0.02)
        assert books.books[T1].synced
        server.close()  # venue gone: the socket closes, reconnects fail for a while
        for _ in range(100):
            if metrics.count("reconnects", "clob") >= 1:
                break
            await asyncio.sleep(0.02)
        assert metrics.count("reconnects", "clob") >= 1
        await asyncio.sleep(0.2)
        book = books.books[T1]
        # Nothing flows for this book any more: it must be flagged (a STALE tick), not served as fresh.
        assert book.stale, "book still fresh after the book socket dropped"
        assert any(t.kind == mpb.TICK_KIND_STALE and t.emit for t in touched)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()


def test_after_a_reconnect_old_hints_are_not_served_as_fresh_prices() -> None:
    """After a reconnect the previous connection's venue hints are not the top of book: a last_trade_price
    before the snapshot publishes no old best bid / ask as fresh."""
    s = _state(T1)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.50", "10")], [("0.52", "10")])), 1_000)
    s.apply(clob.parse_event(_change(1_001, {"asset_id": T1, "price": "0.49", "size": "5", "side": "BUY",
                                             "best_bid": "0.50", "best_ask": "0.52"})), 1_001)
    s.desync_all()  # the socket was lost; the market moved meanwhile
    [t] = s.apply(clob.parse_event({"event_type": "last_trade_price", "asset_id": T1, "market": MARKET,
                                    "price": "0.70", "side": "BUY", "size": "1", "timestamp": "90000"}), 90_000)
    tick = s.price_tick(T1, t.kind, 1)
    # best bid / ask here are the pre-disconnect hints (0.50 / 0.52) next to a 0.70 trade, and not stale
    assert tick.stale or (tick.best_bid == "" and tick.best_ask == ""), (
        f"pre-reconnect prices served fresh: bid={tick.best_bid} ask={tick.best_ask} stale={tick.stale}")


# --- 2. deltas older than the book are applied (history replayed over a newer snapshot) ------------------------


def test_a_delta_older_than_the_snapshot_is_not_applied() -> None:
    """A REST /book resync (or any snapshot) at venue time 5000; a lagging price_change stamped 2000 is already
    in it and is not applied (its long-gone 0.51 bid would become the best bid)."""
    s = _state(T1)
    s.apply(clob.parse_event(_book(T1, 5_000, [("0.48", "10"), ("0.50", "10")], [("0.54", "5"), ("0.52", "5")])),
            10)
    assert s.apply(clob.parse_event(_change(2_000, {"asset_id": T1, "price": "0.51", "size": "100", "side": "BUY",
                                                    "best_bid": "0.51", "best_ask": "0.52"})), 11) == []
    tick = s.price_tick(T1, mpb.TICK_KIND_PRICE_CHANGE, 1)
    assert (tick.best_bid, tick.stale) == ("0.5", False)
    # a change as new as the snapshot, or newer, applies
    [t] = s.apply(clob.parse_event(_change(5_000, {"asset_id": T1, "price": "0.51", "size": "100", "side": "BUY",
                                                   "best_bid": "0.51", "best_ask": "0.52"})), 12)
    assert s.price_tick(T1, t.kind, 1).best_bid == "0.51"


# --- 3. a crossed (out-of-sync) book is served as fresh -----------------------------------------------------------


def test_a_crossed_book_is_not_served_as_fresh() -> None:
    """A delta was missed (the 0.52 ask was taken): the next change adds a 0.53 bid and the venue says the
    best ask is now 0.54. The local book is crossed (bid 0.53 > ask 0.52) where the venue says otherwise: it
    is stale and out of sync until resynced, not published fresh with mid 0.525."""
    s = _state(T1)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.50", "10")], [("0.54", "10"), ("0.52", "10")])), 1_000)
    [t] = s.apply(clob.parse_event(_change(2_000, {"asset_id": T1, "price": "0.53", "size": "10", "side": "BUY",
                                                   "best_bid": "0.53", "best_ask": "0.54"})), 2_000)
    tick = s.price_tick(T1, t.kind, 1)
    crossed = tick.best_bid and tick.best_ask and D(tick.best_bid) >= D(tick.best_ask)
    assert not (crossed and not tick.stale), (
        f"crossed book served fresh: bid={tick.best_bid} ask={tick.best_ask} mid={tick.mid}")


# --- 4. one malformed entry drops a whole price_change, the other assets' books stay "fresh" ----------------------


def test_a_malformed_entry_does_not_silently_desync_the_other_assets() -> None:
    """price_changes[1] is malformed: the message is refused (counted) and T1's valid change in it is lost, so
    the market's books are stale and out of sync until resynced, not served fresh at the old 0.50."""
    s = _state(T1, T2)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.49", "10"), ("0.50", "10")], [("0.52", "10")])), 1_000)
    s.apply(clob.parse_event(_book(T2, 1_000, [("0.47", "10")], [("0.51", "10")])), 1_000)
    metrics = IngestMetrics()
    handler = ClobHandler(s, lambda _t, _ns: None, metrics)
    frame = _change(2_000,
                    {"asset_id": T1, "price": "0.50", "size": "0", "side": "BUY", "best_bid": "0.49",
                     "best_ask": "0.52"},
                    {"asset_id": T2, "price": "0.5x", "size": "3", "side": "SELL", "best_bid": "0.47",
                     "best_ask": "0.5"})
    handler.handle(orjson.dumps(frame), 2_000 * 1_000_000)
    assert metrics.total("parse_errors", "clob") == 1  # counted, as it should be
    # later traffic for T1 (a trade print) keeps the book fresh
    s.apply(clob.parse_event({"event_type": "last_trade_price", "asset_id": T1, "market": MARKET, "price": "0.50",
                              "side": "SELL", "size": "10", "timestamp": "3000"}), 3_000)
    tick = s.price_tick(T1, mpb.TICK_KIND_LAST_TRADE_PRICE, 1)
    assert tick.best_bid == "0.49" or tick.stale, (
        f"T1 lost a valid level change and is served fresh at bid {tick.best_bid}")


# --- 5. RTDS without topic/type: the same fill from both subscriptions becomes two trades -------------------------


def test_untyped_rtds_messages_from_both_subscriptions_are_one_trade() -> None:
    """FORMATS 1.2: the live API may stop sending topic/type and the handler routes on payload shape. Ingest
    subscribes to activity/trades AND activity/orders_matched, so the leader's taker fill arrives twice: both
    sightings get the same id (one leader trade, one copy)."""
    emitted: list[Identified] = []
    handler = RtdsHandler({LEADER}.__contains__, emitted.append, IngestMetrics())
    frame = (FIXTURES / "rtds_no_topic_fallback.json").read_bytes()
    handler.handle(frame, 1_767_225_601_000_000_000)  # via activity/trades
    handler.handle(frame, 1_767_225_602_900_000_000)  # the same fill via activity/orders_matched
    assert len(emitted) == 2
    assert len({e.id for e in emitted}) == 1, f"one fill became {len({e.id for e in emitted})} leader trades"


def test_books_found_out_of_sync_are_handed_over_for_a_rest_resync() -> None:
    s = _state(T1, T2)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.50", "10")], [("0.54", "10"), ("0.52", "10")])), 1_000)
    s.apply(clob.parse_event(_book(T2, 1_000, [("0.47", "10")], [("0.51", "10")])), 1_000)
    resync: list[str] = []
    ticks: list[Touched] = []
    handler = ClobHandler(s, lambda t, _ns: ticks.append(t), IngestMetrics(), on_desync=resync.append)
    crossed = _change(2_000, {"asset_id": T1, "price": "0.53", "size": "10", "side": "BUY", "best_bid": "0.53",
                              "best_ask": "0.54"})
    handler.handle(orjson.dumps(crossed), 2_000 * 1_000_000)

    assert resync == [T1]
    assert [(t.asset_id, t.kind) for t in ticks] == [(T1, mpb.TICK_KIND_STALE)]
    assert s.take_desynced() == []  # handed over once
    # a change the venue's own top confirms is not a desync, even crossed for a moment
    s.apply(clob.parse_event(_book(T2, 3_000, [("0.47", "10")], [("0.51", "10")])), 3_000)
    confirmed = _change(3_001, {"asset_id": T2, "price": "0.52", "size": "1", "side": "BUY", "best_bid": "0.52",
                                "best_ask": "0.51"})
    handler.handle(orjson.dumps(confirmed), 3_001 * 1_000_000)
    assert resync == [T1] and not s.books[T2].stale
