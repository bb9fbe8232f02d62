"""What an operator ending an order by hand states, checked field by field (an error names its field), and read as the
venue answer it stands for: the events a status query of that answer would bring, reason OPERATOR_RESOLVED."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.operator_statement import (
    OPERATOR_RESOLVED,
    NotEndable,
    Outcome,
    Statement,
    check,
    ended,
    read_statement,
)

WHY = "read at the venue: not filled"
SELL = v.PlaceRequest("co_1", "u", "w", "0x0", "1", "SELL", "FAK", None, D("20"), D("0.45"))
BUY_USD = v.PlaceRequest("co_1", "u", "w", "0x0", "1", "BUY", "FAK", D("10"), None, D("0.55"))


@pytest.mark.parametrize(("outcome", "size", "price", "reason", "field"), [
    ("", "", "", WHY, "outcome"),
    ("UNSPECIFIED", "", "", WHY, "outcome"),
    ("NOT_FILLED", "", "", "", "reason"),
    ("NOT_FILLED", "", "", " \n\t ", "reason"),
    ("NOT_FILLED", "5", "", WHY, "filled_size"),
    ("NOT_FILLED", "", "0.5", WHY, "avg_price"),
    ("NOT_FILLED", "five", "", WHY, "filled_size"),
    ("FILLED", "", "0.5", WHY, "filled_size"),
    ("FILLED", "abc", "0.5", WHY, "filled_size"),
    ("FILLED", "NaN", "0.5", WHY, "filled_size"),
    ("FILLED", "Infinity", "0.5", WHY, "filled_size"),
    ("FILLED", "-1", "0.5", WHY, "filled_size"),
    ("FILLED", "0", "0.5", WHY, "filled_size"),
    ("FILLED", "5", "", WHY, "avg_price"),
    ("FILLED", "5", "0,5", WHY, "avg_price"),
    ("FILLED", "5", "-0.5", WHY, "avg_price"),
    ("FILLED", "5", "0", WHY, "avg_price"),
    ("FILLED", "5", "1.01", WHY, "avg_price"),
])
def test_a_statement_that_does_not_read_names_its_field(outcome: str, size: str, price: str, reason: str,
                                                        field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        read_statement(outcome, size, price, reason)


def test_a_statement_that_reads() -> None:
    assert read_statement("NOT_FILLED", "", "0", f"  {WHY}\n") == Statement(Outcome.NOT_FILLED, D(0), D(0), WHY)
    assert read_statement("FILLED", "19.6", "0.51", WHY) == Statement(Outcome.FILLED, D("19.6"), D("0.51"), WHY)


def _life(state: lc.State, filled: str = "0") -> lc.OrderLife:
    return lc.OrderLife("co_1", state, "io_1" if state is not lc.State.UNKNOWN else "", filled_size=D(filled),
                        avg_price=D("0.5") if D(filled) else D(0))


@pytest.mark.parametrize(("life", "request_", "st", "field"), [
    (_life(lc.State.UNKNOWN), SELL, Statement(Outcome.FILLED, D("20.01"), D("0.5"), WHY), "filled_size"),
    (_life(lc.State.UNKNOWN), BUY_USD, Statement(Outcome.FILLED, D("19.7"), D("0.51"), WHY), "filled_size"),
    (_life(lc.State.PARTIALLY_FILLED, "5"), SELL, Statement(Outcome.FILLED, D("4"), D("0.5"), WHY), "filled_size"),
    (_life(lc.State.PARTIALLY_FILLED, "5"), SELL, Statement(Outcome.NOT_FILLED, D(0), D(0), WHY), "outcome"),
    # 5 booked at 0.5: 3 more cannot bring the average to 0.2 (they would be at a negative price), nor 5 to 0.4
    (_life(lc.State.PARTIALLY_FILLED, "5"), SELL, Statement(Outcome.FILLED, D("8"), D("0.2"), WHY), "avg_price"),
    (_life(lc.State.PARTIALLY_FILLED, "5"), SELL, Statement(Outcome.FILLED, D("5"), D("0.4"), WHY), "avg_price"),
    (_life(lc.State.PARTIALLY_FILLED, "5"), SELL, Statement(Outcome.FILLED, D("6"), D("0.59"), WHY), "avg_price"),
])
def test_a_fill_the_order_cannot_have_made_names_its_field(life: lc.OrderLife, request_: v.PlaceRequest,
                                                           st: Statement, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        check(life, request_, st)


@pytest.mark.parametrize("state", [lc.State.NEW, lc.State.SUBMITTING, *sorted(lc.TERMINAL, key=lambda s: s.value)])
def test_only_an_order_the_venue_may_hold_is_ended(state: lc.State) -> None:
    with pytest.raises(NotEndable, match=state.value):
        check(_life(state), SELL, Statement(Outcome.NOT_FILLED, D(0), D(0), WHY))


def _apply(life: lc.OrderLife, events: list[lc.Event]) -> lc.OrderLife:
    for e in events:
        life = lc.apply(life, e)
    return life


@pytest.mark.parametrize(("life", "st", "state", "filled"), [
    (_life(lc.State.UNKNOWN), Statement(Outcome.NOT_FILLED, D(0), D(0), WHY), lc.State.CANCELLED, "0"),
    (_life(lc.State.UNKNOWN), Statement(Outcome.FILLED, D("19.6"), D("0.51"), WHY), lc.State.FILLED, "19.6"),
    (_life(lc.State.PLACED), Statement(Outcome.NOT_FILLED, D(0), D(0), WHY), lc.State.CANCELLED, "0"),
    (_life(lc.State.PARTIALLY_FILLED, "5"), Statement(Outcome.FILLED, D("8"), D("0.5"), WHY), lc.State.FILLED, "8"),
])
def test_a_statement_ends_the_order_as_a_venue_answer_would_with_its_reason(
        life: lc.OrderLife, st: Statement, state: lc.State, filled: str) -> None:
    check(life, SELL, st)
    marked, events = ended(life, st)
    assert marked == replace(life, reason=OPERATOR_RESOLVED, detail=WHY)
    last = _apply(marked, events)
    assert (last.state, last.filled_size, last.reason, last.detail) == (state, D(filled), OPERATOR_RESOLVED, WHY)
    assert isinstance(events[0], lc.OrderAccepted) is (life.state is lc.State.UNKNOWN)  # the venue has it after all
