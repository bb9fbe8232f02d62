"""The venue's own best bid / ask in a ``price_change`` against the levels kept: a book whose top disagrees with
them has missed a change and is not served as fresh (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.ingest import clob
from services.ingest.books import BookState
from tradingtools.market.v1 import market_pb2 as mpb

T1 = "31415926535897932384626433832795028841971693993751058209749445923078164062862"
T2 = "27182818284590452353602874713526624977572470936999595749669676277240766303535"
MARKET = "0x" + "c" * 64


def _book(asset: str, ts: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> clob.ClobMsg:
    """A ``book`` event in wire order (bids ascending, asks descending: best = last)."""
    return clob.parse_event({"event_type": "book", "asset_id": asset, "market": MARKET, "timestamp": str(ts),
                             "hash": f"h{ts}", "bids": [{"price": p, "size": z} for p, z in bids],
                             "asks": [{"price": p, "size": z} for p, z in asks], "tick_size": "0.01"})


def _change(ts: int, *changes: dict[str, str]) -> clob.ClobMsg:
    return clob.parse_event({"event_type": "price_change", "market": MARKET, "timestamp": str(ts),
                             "price_changes": list(changes)})


def _entry(asset: str, side: str, price: str, size: str, best_bid: str, best_ask: str) -> dict[str, Any]:
    return {"asset_id": asset, "side": side, "price": price, "size": size, "best_bid": best_bid, "best_ask": best_ask}


def _synced() -> BookState:
    s = BookState()
    s.track(T1)
    s.track(T2)
    s.apply(_book(T1, 1_000, [("0.49", "5"), ("0.50", "10")], [("0.53", "4"), ("0.52", "10")]), 1_000)
    s.apply(_book(T2, 1_000, [("0.47", "4"), ("0.48", "10")], [("0.51", "10")]), 1_000)
    return s


def test_a_best_bid_the_venue_contradicts_is_not_served_fresh() -> None:
    """The 0.50 bid was cancelled and that change never arrived: the next change (a 0.49 bid) says the best bid is
    0.49. Served as it is, the book would price a SELL copy at a 0.50 bid that is gone."""
    s = _synced()
    [touched] = s.apply(_change(2_000, _entry(T1, "BUY", "0.49", "6", "0.49", "0.52")), 2_000)
    tick = s.price_tick(T1, touched.kind, 1)
    assert tick.stale or tick.best_bid == "0.49", f"best bid {tick.best_bid} served fresh; the venue says 0.49"
    assert touched.kind == mpb.TICK_KIND_STALE and s.take_desynced() == [T1]  # resynced from REST


def test_a_best_ask_the_venue_contradicts_is_not_served_fresh_and_other_assets_keep_theirs() -> None:
    """A two-asset message: T1's top disagrees with the venue's (an ask of 0.51 it never received), T2's agrees."""
    s = _synced()
    touched = s.apply(_change(2_000, _entry(T1, "SELL", "0.53", "2", "0.50", "0.51"),
                              _entry(T2, "BUY", "0.47", "6", "0.48", "0.51")), 2_000)
    assert [(t.asset_id, t.kind) for t in touched] == [(T1, mpb.TICK_KIND_STALE), (T2, mpb.TICK_KIND_PRICE_CHANGE)]
    assert not s.books[T2].stale and s.books[T2].synced


def test_a_top_the_venue_confirms_is_served() -> None:
    """Hints that agree (also "0" / "1" for an empty side, and "0.5" for a 0.50 level) change nothing."""
    s = _synced()
    [t] = s.apply(_change(2_000, _entry(T1, "BUY", "0.50", "0", "0.49", "0.52")), 2_000)
    assert (t.kind, s.books[T1].stale, s.books[T1].best_bid) == (mpb.TICK_KIND_PRICE_CHANGE, False, Decimal("0.49"))
    [t] = s.apply(_change(2_001, _entry(T1, "BUY", "0.49", "0", "0", "0.52")), 2_001)
    assert (t.kind, s.books[T1].stale, s.books[T1].best_bid) == (mpb.TICK_KIND_PRICE_CHANGE, False, None)
    [t] = s.apply(_change(2_002, _entry(T1, "BUY", "0.5", "3", "0.50", "0.520")), 2_002)
    assert (t.kind, s.books[T1].stale) == (mpb.TICK_KIND_PRICE_CHANGE, False)
    assert s.take_desynced() == []


def test_a_change_without_hints_is_judged_by_the_levels_alone() -> None:
    """Legacy shapes carry no best bid / ask: the hints of an older message are not held against a newer book."""
    s = _synced()
    s.apply(_change(2_000, _entry(T1, "BUY", "0.51", "1", "0.51", "0.52")), 2_000)
    [t] = s.apply(_change(2_001, {"asset_id": T1, "side": "BUY", "price": "0.51", "size": "0"}), 2_001)
    assert (t.kind, s.books[T1].stale) == (mpb.TICK_KIND_PRICE_CHANGE, False)
