"""A ``price_change`` message's changes, applied in runs of one asset (the level updates inline), leave every book
as :meth:`AssetBook.set_level` / :meth:`AssetBook.hold` one change at a time would, whatever the order of assets."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import clob
from services.ingest.books import AssetBook, BookState

D = Decimal
ASSETS = ("1" * 70, "2" * 70, "3" * 70, "4" * 70)  # the last one is not tracked
MARKET = "0x" + "ab" * 32

PRICES = [D(p) for p in ("0.05", "0.2", "0.33", "0.4", "0.5", "0.61", "0.7", "0.95")]  # few: changes hit levels
change_st = st.tuples(st.sampled_from(ASSETS), st.sampled_from(["BUY", "SELL"]), st.sampled_from(PRICES),
                      st.sampled_from([None, D(0), D(0), D(1), D(2), D("2.5")]))


def _levels(book: AssetBook) -> tuple[object, ...]:
    return (book.bids, book.asks, book._bid_px, book._ask_px, book._bid_js, book._ask_js, book.pending)


@settings(max_examples=300, deadline=None)
@given(st.lists(change_st, max_size=40),
       st.lists(st.tuples(st.sampled_from(PRICES), st.sampled_from([D(1), D(3)])), max_size=6), st.booleans())
def test_a_message_of_many_changes_sets_the_levels_one_by_one_would(
        changes: list[tuple[str, str, D, D | None]], snapshot: list[tuple[D, D]], third_synced: bool) -> None:
    state = BookState()
    reference: dict[str, AssetBook] = {}
    for asset in ASSETS[:3]:
        state.track(asset)
        reference[asset] = ref = AssetBook(asset)
        if asset != ASSETS[2] or third_synced:  # the third waits for its snapshot: its changes are held
            msg = clob.BookMsg(asset, MARKET, tuple(snapshot), tuple(reversed(snapshot)), None, None, 5)
            state.apply(msg, 1)
            ref.replace({p: s for p, s in msg.bids if s != 0}, {p: s for p, s in msg.asks if s != 0})
            ref.synced = True
    for asset, side, price, size in changes:
        if asset not in reference or size is None:
            continue
        if reference[asset].synced:
            reference[asset].set_level(side, price, size)
        else:
            reference[asset].hold(7, side, price, size)
    touched = state.apply(clob.PriceChangeMsg(MARKET, tuple(clob.LevelChange(a, side, p, z)
                                                            for a, side, p, z in changes), 7), 2)
    for asset, ref in reference.items():
        assert _levels(state.books[asset]) == _levels(ref)
    firsts = list(dict.fromkeys(a for a, *_ in changes if a in reference))
    assert [t.asset_id for t in touched] == firsts  # one each, in the order of their first change
