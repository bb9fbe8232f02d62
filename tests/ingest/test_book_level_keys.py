"""Levels are keyed by their Decimal value, never by the wire text: "0.5", "0.50" and "0.500" are one level, and a
size of "0" / "0.00" is no level (pure)."""

from __future__ import annotations

from decimal import Decimal

from common.marketstate import BookSnapshot
from services.ingest import clob
from services.ingest.books import BookState

T1 = "31415926535897932384626433832795028841971693993751058209749445923078164062862"
MARKET = "0x" + "c" * 64
D = Decimal


def test_one_price_written_three_ways_is_one_level_and_zero_sizes_are_no_level() -> None:
    s = BookState()
    s.track(T1)
    s.apply(clob.parse_event({"event_type": "book", "asset_id": T1, "market": MARKET, "timestamp": "1000",
                              "bids": [{"price": "0.40", "size": "0.00"}, {"price": "0.5", "size": "10"}],
                              "asks": [{"price": "0.60", "size": "3"}]}), 1_000)
    s.apply(clob.parse_event({"event_type": "price_change", "market": MARKET, "timestamp": "2000", "price_changes": [
        {"asset_id": T1, "price": "0.50", "size": "12.0", "side": "BUY", "best_bid": "0.5", "best_ask": "0.6"},
        {"asset_id": T1, "price": "0.600", "size": "0", "side": "SELL", "best_bid": "0.50", "best_ask": "1"}]}), 2_000)
    stored = BookSnapshot.from_json(s.books[T1].snapshot_json(10, s.session))
    assert stored.bids == ((D("0.5"), D("12")),) and stored.asks == ()
    assert stored.to_json() == s.books[T1].snapshot(10, s.session).to_json()
    assert b'"bids":[["0.5","12"]]' in s.books[T1].snapshot_json(10, s.session)
    s.apply(clob.parse_event({"event_type": "price_change", "market": MARKET, "timestamp": "3000", "price_changes": [
        {"asset_id": T1, "price": "0.500", "size": "0.000", "side": "BUY", "best_bid": "0", "best_ask": "1"}]}), 3_000)
    assert s.books[T1].snapshot(10).bids == () and not s.books[T1].stale
