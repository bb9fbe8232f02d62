"""Past its bound, a book waiting for its snapshot drops the levels changed least recently (pure): a level that keeps
changing stays, so a snapshot older than its latest change but newer than every dropped one is still taken."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.ingest import books as books_mod
from services.ingest import clob
from services.ingest.books import BookState
from tests.ingest.test_feed_trust import T1, _book, _change, _state

D = Decimal
BOUND = 20


def _level(ts: int, side: str, price: str, size: str) -> clob.ClobMsg:
    return clob.parse_event(_change(ts, {"asset_id": T1, "price": price, "size": size, "side": side}))


def _waiting() -> BookState:
    s = _state(T1)
    s.apply(clob.parse_event(_book(T1, 1_000, [("0.40", "1")], [("0.60", "1")])), 1_000)
    s.desync_all()
    return s


def test_a_level_changed_again_outlives_levels_changed_once_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(books_mod, "PENDING_MAX", BOUND)
    s = _waiting()
    s.apply(_level(2_000, "BUY", "0.30", "5"), 2_000)  # the hot level, first changed before the others
    others = [f"0.{n:02d}" for n in range(10, 10 + BOUND - 1)]
    for i, price in enumerate(others):
        s.apply(_level(2_001 + i, "BUY", price, "3"), 2_001 + i)
    s.apply(_level(3_000, "BUY", "0.30", "7"), 3_000)  # changed again: the newest change of all
    s.apply(_level(3_001, "SELL", "0.70", "9"), 3_001)  # one level past the bound: half are dropped
    s.apply(clob.parse_event(_book(T1, 2_500, [("0.40", "2")], [("0.60", "2")])), 3_002)  # a REST read at 2,500
    book = s.books[T1]
    assert book.synced
    assert book.bids == {D("0.40"): D(2), D("0.30"): D(7)}
    assert book.asks == {D("0.60"): D(2), D("0.70"): D(9)}
