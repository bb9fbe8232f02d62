"""The paper venue's answer to a SELL on the wallet's balance, and the paper SELLs it counts in flight (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.executor.domain import venue_orders as v
from services.executor.domain.paper_selling import (
    NOT_ENOUGH_BALANCE,
    PaperHolding,
    PaperSelling,
    balance_answer,
    in_flight,
)

D = Decimal
KEY = ("w", "tok")


def _req(side: str, size: str | None = None, amount: str | None = None) -> v.PlaceRequest:
    return v.PlaceRequest("co_me", "u", "w", "0xp", "tok", side, "FAK", D(amount) if amount else None,
                          D(size) if size is not None else None, D("0.40"))


@pytest.mark.parametrize(("held", "selling", "req", "refused"), [
    ("20", "0", _req("SELL", "20"), False),  # all of it
    ("20", "0", _req("SELL", "30"), True),  # more than held: the whole order is refused
    ("20", "0", _req("SELL", "20.01"), True),
    ("20", "15", _req("SELL", "5"), False),  # what the SELLs in flight leave
    ("20", "15", _req("SELL", "15"), True),
    ("20", "25", _req("SELL", "1"), True),  # more in flight than held (booking behind): nothing to sell
    ("0", "0", _req("SELL", "1"), True),  # nothing held
    ("0", "0", _req("BUY", amount="1000"), False),  # a BUY is not checked on shares
    ("0", "0", _req("SELL", "0"), False),  # left to the fill's own check (INVALID_ORDER_MIN_SIZE)
    ("0", "0", _req("SELL", None), False),
], ids=["all", "beyond", "a-hundredth-beyond", "the-rest", "sold-in-flight", "oversold-in-flight", "nothing-held",
        "buy", "zero-size", "no-size"])
def test_balance_answer(held: str, selling: str, req: v.PlaceRequest, refused: bool) -> None:
    answer = balance_answer(D(held), D(selling), req)
    if not refused:
        assert answer is None
        return
    assert isinstance(answer, v.VenueError)
    assert (answer.kind, answer.http_status, answer.code) == ("http", 400, NOT_ENOUGH_BALANCE)


def test_the_refusal_names_the_balance_and_the_order_amount() -> None:
    answer = balance_answer(D("20"), D("5"), _req("SELL", "30"))
    assert isinstance(answer, v.VenueError)
    assert "balance: 15, order amount: 30" in answer.message


@pytest.mark.parametrize(("selling", "filled", "expected"), [
    ({}, {}, "0"),
    ({"co_a": D(0)}, {}, "0"),  # under way, not answered yet: sold nothing
    ({"co_a": D(0)}, {"co_a": D(15)}, "15"),  # filled, not booked
    ({"co_a": D(10)}, {"co_a": D(15)}, "5"),  # partly booked
    ({"co_a": D(15)}, {"co_a": D(15)}, "0"),
    ({"co_a": D(0), "co_b": D(0)}, {"co_a": D(15), "co_b": D(3)}, "18"),
    ({"co_me": D(0)}, {"co_me": D(15)}, "0"),  # the order asking is not its own SELL in flight
    ({}, {"co_z": D(9)}, "0"),  # a fill whose order is not under way is booked (in the holding)
], ids=["none", "unanswered", "filled", "partly-booked", "booked", "two", "own", "ended"])
def test_in_flight(selling: dict[str, Decimal], filled: dict[str, Decimal], expected: str) -> None:
    assert in_flight(selling, filled, "co_me") == D(expected)


def test_a_kept_fill_counts_until_the_holding_read_after_it_no_longer_has_its_order() -> None:
    s = PaperSelling()
    before = s.mark()
    s.record(KEY, "co_a", D(15), 1_000)
    # a read that began before the fill: its order is under way there (sent), or not in it yet (inserted later)
    assert s.unbooked(KEY, PaperHolding(D(20), {"co_a": D(0)}), before, {}, "co_me") == D(15)
    assert s.unbooked(KEY, PaperHolding(D(20), {}), before, {}, "co_me") == D(15)
    after = s.mark()
    assert s.unbooked(KEY, PaperHolding(D(20), {"co_a": D(0)}), after, {}, "co_me") == D(15)
    # a read made after the fill without its order: it ended, its fill is in the holding
    assert s.unbooked(KEY, PaperHolding(D(5), {}), after, {}, "co_me") == D(0)
    assert len(s) == 0


def test_a_result_kept_in_redis_counts_for_a_sell_under_way_with_no_fill_kept_here() -> None:
    s = PaperSelling()
    holding = PaperHolding(D(20), {"co_old": D(0)})
    assert s.unbooked(KEY, holding, s.mark(), {"co_old": D(15)}, "co_me") == D(15)


def test_fills_of_other_wallets_or_tokens_do_not_count() -> None:
    s = PaperSelling()
    s.record(("w2", "tok"), "co_a", D(15), 1_000)
    s.record(("w", "tok2"), "co_b", D(15), 1_000)
    assert s.unbooked(KEY, PaperHolding(D(20), {}), 0, {}, "co_me") == D(0)
    assert len(s) == 2


def test_nothing_filled_is_not_kept_and_a_forgotten_fill_is_dropped() -> None:
    s = PaperSelling()
    s.record(KEY, "co_a", D(0), 1_000)
    s.record(KEY, "co_b", D(4), 1_000)
    s.forget(KEY, "co_b")
    assert len(s) == 0 and s.filled(KEY, ["co_a", "co_b"]) == {}


def test_kept_fills_are_swept_after_keep_ms() -> None:
    s = PaperSelling(keep_ms=1_000)
    s.record(KEY, "co_a", D(5), 0)  # the first record sweeps: the next sweep is due at 1,000
    s.record(KEY, "co_b", D(5), 999)
    s.record(KEY, "co_c", D(5), 1_000)
    assert s.filled(KEY, ["co_a", "co_b", "co_c"]) == {"co_b": D(5), "co_c": D(5)}
