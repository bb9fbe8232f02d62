"""The order state machine: every allowed transition, every forbidden one, and the facts it keeps."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from services.executor.domain import order_lifecycle as lc
from services.executor.domain.order_lifecycle import State

D = Decimal
SAMPLES: dict[type, lc.Event] = {
    lc.OrderSubmitted: lc.OrderSubmitted(D("0.51")),
    lc.SubmitAttemptFailed: lc.SubmitAttemptFailed("VENUE_HTTP_503"),
    lc.OrderTimedOut: lc.OrderTimedOut("VENUE_TIMEOUT"),
    lc.OrderAccepted: lc.OrderAccepted("io_1", "matched"),
    lc.OrderNotFound: lc.OrderNotFound(),
    lc.OrderLost: lc.OrderLost(),
    lc.OrderPartiallyFilled: lc.OrderPartiallyFilled(D("5"), D("0.5")),
    lc.OrderFilled: lc.OrderFilled(D("10"), D("0.5")),
    lc.OrderCancelled: lc.OrderCancelled("NOT_FILLED"),
    lc.OrderRejected: lc.OrderRejected("MARKET_CLOSED"),
    lc.OrderFailed: lc.OrderFailed("VENUE_FAILED"),
}
EXPECTED = {
    (State.NEW, lc.OrderSubmitted): State.SUBMITTING,
    (State.NEW, lc.OrderRejected): State.REJECTED,
    (State.NEW, lc.OrderFailed): State.FAILED,
    (State.SUBMITTING, lc.SubmitAttemptFailed): State.SUBMITTING,
    (State.SUBMITTING, lc.OrderTimedOut): State.UNKNOWN,
    (State.SUBMITTING, lc.OrderAccepted): State.PLACED,
    (State.SUBMITTING, lc.OrderRejected): State.REJECTED,
    (State.SUBMITTING, lc.OrderFailed): State.FAILED,
    (State.UNKNOWN, lc.OrderNotFound): State.UNKNOWN,
    (State.UNKNOWN, lc.OrderAccepted): State.PLACED,
    (State.UNKNOWN, lc.OrderLost): State.LOST,
    (State.UNKNOWN, lc.OrderSubmitted): State.SUBMITTING,
    (State.UNKNOWN, lc.OrderFailed): State.FAILED,  # answered 5xx, not found, too old to re-POST
    (State.PLACED, lc.OrderPartiallyFilled): State.PARTIALLY_FILLED,
    (State.PLACED, lc.OrderFilled): State.FILLED,
    (State.PLACED, lc.OrderCancelled): State.CANCELLED,
    (State.PLACED, lc.OrderFailed): State.FAILED,
    (State.PLACED, lc.OrderLost): State.LOST,
    (State.PARTIALLY_FILLED, lc.OrderPartiallyFilled): State.PARTIALLY_FILLED,
    (State.PARTIALLY_FILLED, lc.OrderFilled): State.FILLED,
    (State.PARTIALLY_FILLED, lc.OrderCancelled): State.CANCELLED,
    (State.PARTIALLY_FILLED, lc.OrderFailed): State.FAILED,
    (State.PARTIALLY_FILLED, lc.OrderLost): State.LOST,
}
ALL = [(s, e) for s in State for e in lc.EVENT_TYPES]


def test_table_is_exactly_the_documented_one() -> None:
    assert lc.TRANSITIONS == EXPECTED
    assert set(SAMPLES) == set(lc.EVENT_TYPES)


@pytest.mark.parametrize(("state", "event_type"), sorted(EXPECTED, key=lambda k: (k[0].value, k[1].__name__)),
                         ids=lambda x: getattr(x, "value", getattr(x, "__name__", str(x))))
def test_allowed(state: State, event_type: type) -> None:
    life = lc.OrderLife("co_1", state, filled_size=D("0"))
    after = lc.apply(life, SAMPLES[event_type])
    assert after.state is EXPECTED[(state, event_type)]
    assert life.state is state  # immutable


@pytest.mark.parametrize(("state", "event_type"), [k for k in ALL if k not in EXPECTED],
                         ids=lambda x: getattr(x, "value", getattr(x, "__name__", str(x))))
def test_forbidden(state: State, event_type: type) -> None:
    with pytest.raises(lc.IllegalTransition):
        lc.apply(lc.OrderLife("co_1", state), SAMPLES[event_type])


@pytest.mark.parametrize("state", sorted(lc.TERMINAL, key=lambda s: s.value))
def test_terminal_states_accept_nothing(state: State) -> None:
    assert state.terminal
    for event in SAMPLES.values():
        with pytest.raises(lc.IllegalTransition):
            lc.apply(lc.OrderLife("co_1", state), event)


def test_events_are_immutable() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[lc.OrderRejected].reason = "X"  # type: ignore[misc, union-attr]


def test_a_full_life_keeps_its_facts() -> None:
    life = lc.OrderLife("co_1")
    life = lc.apply(life, lc.OrderSubmitted(D("0.51")))
    assert (life.state, life.attempts, life.limit_price) == (State.SUBMITTING, 1, D("0.51"))
    life = lc.apply(life, lc.SubmitAttemptFailed("VENUE_HTTP_503"))
    assert life.attempts == 2
    life = lc.apply(life, lc.OrderTimedOut("VENUE_TIMEOUT"))
    assert life.state is State.UNKNOWN and not life.maybe_unsent
    life = lc.apply(life, lc.OrderNotFound())
    life = lc.apply(life, lc.OrderNotFound())
    assert life.not_found == 2
    life = lc.apply(life, lc.OrderAccepted("io_9", "live"))
    assert (life.venue_order_id, life.not_found) == ("io_9", 0)
    life = lc.apply(life, lc.OrderPartiallyFilled(D("4"), D("0.5")))
    life = lc.apply(life, lc.OrderFilled(D("10"), D("0.505")))
    assert (life.state, life.filled_size, life.avg_price) == (State.FILLED, D("10"), D("0.505"))


def test_restart_unknown_marks_maybe_unsent_and_resubmit_clears_it() -> None:
    life = lc.apply(lc.OrderLife("co_1", State.SUBMITTING, attempts=1),
                    lc.OrderTimedOut("EXECUTOR_RESTARTED", surely_sent=False))
    assert life.maybe_unsent
    life = lc.apply(lc.apply(life, lc.OrderNotFound()), lc.OrderSubmitted())
    assert life.state is State.SUBMITTING and not life.maybe_unsent and life.attempts == 2 and life.not_found == 0


def test_fill_never_goes_back() -> None:
    life = lc.OrderLife("co_1", State.PARTIALLY_FILLED, filled_size=D("5"), avg_price=D("0.5"))
    with pytest.raises(lc.IllegalTransition):
        lc.apply(life, lc.OrderFilled(D("4"), D("0.5")))


def test_terminal_reason_is_kept() -> None:
    life = lc.apply(lc.OrderLife("co_1", State.UNKNOWN), lc.OrderLost())
    assert (life.state, life.reason) == (State.LOST, "VENUE_NOT_FOUND")
    life = lc.apply(lc.OrderLife("co_2"), lc.OrderRejected("INSUFFICIENT_DEPTH", "0 USD within 0.51"))
    assert (life.reason, life.detail) == ("INSUFFICIENT_DEPTH", "0 USD within 0.51")


def test_an_answered_retryable_error_marks_the_order_resubmittable() -> None:
    timed_out = lc.OrderTimedOut("VENUE_HTTP_503", answered=True)
    life = lc.apply(lc.OrderLife("co_1", State.SUBMITTING, attempts=4), timed_out)
    assert life.state is State.UNKNOWN and life.maybe_unsent
    life = lc.apply(life, lc.OrderFailed("VENUE_UNAVAILABLE"))
    assert life.state is State.FAILED and life.reason == "VENUE_UNAVAILABLE"


@pytest.mark.parametrize("changes", [
    {},
    {"state": State.FILLED, "filled_size": D("3"), "avg_price": D("0.5")},
    {"detail": "d", "attempts": 3, "maybe_unsent": True, "limit_price": None},
])
def test_evolve_is_dataclasses_replace(changes: dict[str, object]) -> None:
    life = lc.OrderLife("co_e", State.PLACED, venue_order_id="v1", limit_price=D("0.5"), attempts=2)
    evolved = lc._evolve(life, **changes)
    assert evolved == dataclasses.replace(life, **changes)  # type: ignore[arg-type]
    assert evolved is not life and life == lc.OrderLife("co_e", State.PLACED, venue_order_id="v1",
                                                         limit_price=D("0.5"), attempts=2)
    with pytest.raises(KeyError):
        lc._evolve(life, no_such_field=1)
