"""What paper orders took of each level (pure): netted, forgotten when the book drops the level or after a while."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.executor.domain.book_math import Levels, walk_buy_usd, walk_sell_size
from services.executor.domain.paper_book import PaperBook, walk_levels

D = Decimal
ASKS = ((D("0.50"), D("20")), (D("0.51"), D("30")), (D("0.60"), D("100")))
BIDS = ((D("0.49"), D("10")), (D("0.47"), D("40")))
REMNANT = ((D("0.50"), D("0.005")), (D("0.51"), D("100")))


@pytest.mark.parametrize(("levels", "budget", "limit", "buying"), [
    (ASKS, D("20"), D("0.51"), True), (ASKS, D("100"), D("0.51"), True), (ASKS, D("1000"), D("1"), True),
    (ASKS, D("5"), D("0.49"), True), (ASKS, D("0.004"), D("0.60"), True), (REMNANT, D("10"), D("0.52"), True),
    (BIDS, D("30"), D("0.47"), False), (BIDS, D("80"), D("0.47"), False), (BIDS, D("5"), D("0.48"), False),
])
def test_the_walk_by_level_is_the_walk_of_the_book(levels: Levels, budget: Decimal, limit: Decimal,
                                                  buying: bool) -> None:
    walk, takes = walk_levels(levels, budget, limit, buying)
    whole = walk_buy_usd(levels, budget, limit) if buying else walk_sell_size(levels, budget, limit)
    assert walk == whole
    assert sum((shares for _, shares in takes), D(0)) == walk.size
    assert sum((price * shares for price, shares in takes), D(0)) == walk.cost
    assert all(shares > 0 for _, shares in takes)


def test_takes_are_left_out_of_the_side_they_were_taken_from() -> None:
    book = PaperBook(10_000)
    book.take("tok", "BUY", ((D("0.50"), D("20")), (D("0.51"), D("5"))), 0)
    assert book.net("tok", "BUY", ASKS, 1) == ((D("0.51"), D("25")), (D("0.60"), D("100")))
    assert book.net("tok", "SELL", BIDS, 1) == BIDS
    assert book.net("other", "BUY", ASKS, 1) == ASKS


@pytest.mark.parametrize(("levels", "net"), [
    # a maker cancelled 19 of the taken level: the venue's book never shows paper takes, so 1 - 20 leaves nothing
    (((D("0.50"), D("1")), (D("0.51"), D("30"))), ((D("0.51"), D("30")),)),
    # a maker added 10: the 20 taken stay taken of the 30 shown
    (((D("0.50"), D("30")), (D("0.51"), D("30"))), ((D("0.50"), D("10")), (D("0.51"), D("30")))),
    # another level changed: the taken one stays taken
    (((D("0.50"), D("20")), (D("0.51"), D("31"))), ((D("0.51"), D("31")),)),
])
def test_a_take_stays_taken_whatever_size_the_book_shows_the_level_at(levels: Levels, net: Levels) -> None:
    book = PaperBook(10_000)
    book.take("tok", "BUY", ((D("0.50"), D("20")),), 0)
    assert book.net("tok", "BUY", levels, 1) == net


def test_a_level_gone_and_back_is_whole() -> None:
    book = PaperBook(10_000)
    book.take("tok", "BUY", ((D("0.50"), D("20")),), 0)
    assert book.net("tok", "BUY", ASKS[1:], 1) == ASKS[1:]
    assert book.net("tok", "BUY", ASKS, 2) == ASKS


def test_each_take_is_replenished_after_its_own_while() -> None:
    book = PaperBook(1_000)
    book.take("tok", "BUY", ((D("0.50"), D("5")),), 0)
    book.take("tok", "BUY", ((D("0.50"), D("10")),), 500)
    assert book.net("tok", "BUY", ASKS, 999)[0] == (D("0.50"), D("5"))
    assert book.net("tok", "BUY", ASKS, 1_000)[0] == (D("0.50"), D("10"))
    assert book.net("tok", "BUY", ASKS, 1_500) == ASKS
    assert len(book) == 0


def test_a_take_given_back_is_not_left_out() -> None:
    book = PaperBook(1_000)
    book.take("tok", "BUY", ((D("0.50"), D("5")),), 0)
    book.take("tok", "BUY", ((D("0.50"), D("7")),), 10)
    book.give_back("tok", "BUY", ((D("0.50"), D("7")),), 10)
    assert book.net("tok", "BUY", ASKS, 20)[0] == (D("0.50"), D("15"))


def test_takes_of_assets_never_walked_again_are_swept() -> None:
    book = PaperBook(1_000)
    for i in range(50):
        book.take(f"tok{i}", "BUY", ((D("0.50"), D("1")),), 0)
    assert len(book) == 50
    book.take("tok", "SELL", (), 1_000)
    assert len(book) == 0


_LEVEL = ((Decimal("0.50"), Decimal(1000)),)


@given(st.lists(st.tuples(st.sampled_from(["take", "give_back", "wait"]), st.integers(1, 30)), max_size=60))
def test_a_levels_kept_total_is_the_sum_of_its_live_takes(steps: list[tuple[str, int]]) -> None:
    """Each order of a fan-out reads the level's total (one read, not a sum over every take kept: that made a
    10,000-order paper fan-out cost seconds); adds, give-backs and expiry keep it equal to the takes alive."""
    book, now, alive = PaperBook(replenish_ms=50), 0, []
    for op, n in steps:
        if op == "take":
            book.take("a", "BUY", ((Decimal("0.50"), Decimal(n)),), now)
            alive.append((now + 50, Decimal(n), now))
        elif op == "give_back" and alive:
            expires, shares, at = alive.pop()
            book.give_back("a", "BUY", ((Decimal("0.50"), shares),), at)
            assert expires == at + 50
        else:
            now += n
        live = sum((shares for expires, shares, _ in alive if expires > now), Decimal(0))
        [(_, left)] = book.net("a", "BUY", _LEVEL, now) or ((None, Decimal(0)),)
        assert left == max(Decimal(1000) - live, Decimal(0))
