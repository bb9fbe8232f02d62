"""The order lifecycle: one transition table, immutable past-tense events, ``apply`` the only mutator.

::

    NEW ──OrderSubmitted──> SUBMITTING ──OrderAccepted──> PLACED ──OrderPartiallyFilled──> PARTIALLY_FILLED
     │                       │  ▲  │                        │                                │
     │                       │  └──┘ SubmitAttemptFailed    ├──OrderFilled / OrderCancelled / OrderFailed
     │                       └──OrderTimedOut──> UNKNOWN ──OrderAccepted──> PLACED
     │                                            │  ▲ OrderNotFound
     │                                            └──┴──OrderLost──> LOST
     │                                            └──OrderFailed──> FAILED (not taken: no POST uncertain; window over)
     │           PLACED / PARTIALLY_FILLED ──OrderLost──> LOST (the venue no longer finds it, for long enough)
     └── OrderRejected / OrderFailed (executor's own checks, breaker open)

Terminal states: FILLED, CANCELLED, REJECTED, LOST, FAILED.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ZERO


class State(enum.Enum):
    """Where an order is in its life."""

    NEW = "NEW"
    SUBMITTING = "SUBMITTING"
    UNKNOWN = "UNKNOWN"
    PLACED = "PLACED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    LOST = "LOST"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """True for states an order never leaves."""
        return self in TERMINAL


TERMINAL = frozenset({State.FILLED, State.CANCELLED, State.REJECTED, State.LOST, State.FAILED})


class IllegalTransition(Exception):
    """An event that the order's current state does not allow."""


@dataclass(frozen=True, slots=True)
class OrderSubmitted:
    """The intent is persisted and the POST is about to leave."""

    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SubmitAttemptFailed:
    """One POST attempt failed with a retryable error; another attempt will follow.

    ``uncertain``: the attempt ended without a definite answer (the connection dropped mid-call): the venue may
    hold the order, which it keeps for good (``OrderLife.post_uncertain``)."""

    reason: str
    uncertain: bool = False


@dataclass(frozen=True, slots=True)
class OrderTimedOut:
    """The POST's outcome is unknown (timeout, a retryable error after which the venue may hold it, or a
    restart between persisting the intent and learning the outcome: ``surely_sent`` False).

    ``answered``: the venue answered the last attempt with a retryable error (500/503/425/429, not a
    gateway's 502/504; or the breaker refused the retry), so a not-found means it was not taken and a
    re-POST is safe. Not
    answered, the attempt may have left the order at the venue: the order keeps that for good
    (``OrderLife.post_uncertain``)."""

    reason: str
    surely_sent: bool = True
    answered: bool = False


@dataclass(frozen=True, slots=True)
class OrderAccepted:
    """The venue holds the order."""

    venue_order_id: str
    venue_status: str


@dataclass(frozen=True, slots=True)
class OrderNotFound:
    """A status query by client order id found nothing."""


@dataclass(frozen=True, slots=True)
class OrderLost:
    """The venue never heard of the order after repeated status queries (or no longer finds one it took)."""

    reason: str = "VENUE_NOT_FOUND"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OrderPartiallyFilled:
    """Cumulative fill grew while the order stays open."""

    filled_size: Decimal
    avg_price: Decimal


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """The order is done and filled (a FAK's unfilled remainder was killed)."""

    filled_size: Decimal
    avg_price: Decimal


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """The order ended with nothing (more) filled."""

    reason: str
    filled_size: Decimal = ZERO
    avg_price: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class OrderRejected:
    """Refused by the venue or by the executor's checks; never retried."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OrderFailed:
    """Failed after retries, refused by an open breaker, or reported failed by the venue."""

    reason: str
    detail: str = ""


Event = (OrderSubmitted | SubmitAttemptFailed | OrderTimedOut | OrderAccepted | OrderNotFound | OrderLost
         | OrderPartiallyFilled | OrderFilled | OrderCancelled | OrderRejected | OrderFailed)

S = State
TRANSITIONS: dict[tuple[State, type], State] = {
    (S.NEW, OrderSubmitted): S.SUBMITTING,
    (S.NEW, OrderRejected): S.REJECTED,
    (S.NEW, OrderFailed): S.FAILED,
    (S.SUBMITTING, SubmitAttemptFailed): S.SUBMITTING,
    (S.SUBMITTING, OrderTimedOut): S.UNKNOWN,
    (S.SUBMITTING, OrderAccepted): S.PLACED,
    (S.SUBMITTING, OrderRejected): S.REJECTED,
    (S.SUBMITTING, OrderFailed): S.FAILED,
    (S.UNKNOWN, OrderNotFound): S.UNKNOWN,
    (S.UNKNOWN, OrderAccepted): S.PLACED,
    (S.UNKNOWN, OrderLost): S.LOST,
    (S.UNKNOWN, OrderSubmitted): S.SUBMITTING,
    (S.UNKNOWN, OrderFailed): S.FAILED,
    (S.PLACED, OrderPartiallyFilled): S.PARTIALLY_FILLED,
    (S.PLACED, OrderFilled): S.FILLED,
    (S.PLACED, OrderCancelled): S.CANCELLED,
    (S.PLACED, OrderFailed): S.FAILED,
    (S.PLACED, OrderLost): S.LOST,
    (S.PARTIALLY_FILLED, OrderPartiallyFilled): S.PARTIALLY_FILLED,
    (S.PARTIALLY_FILLED, OrderFilled): S.FILLED,
    (S.PARTIALLY_FILLED, OrderCancelled): S.CANCELLED,
    (S.PARTIALLY_FILLED, OrderFailed): S.FAILED,
    (S.PARTIALLY_FILLED, OrderLost): S.LOST,
}
EVENT_TYPES: tuple[type, ...] = (OrderSubmitted, SubmitAttemptFailed, OrderTimedOut, OrderAccepted, OrderNotFound,
                                 OrderLost, OrderPartiallyFilled, OrderFilled, OrderCancelled, OrderRejected,
                                 OrderFailed)


@dataclass(frozen=True, slots=True)
class OrderLife:
    """An order's lifecycle state and the facts accumulated on the way.

    ``maybe_unsent``: the last attempt may have left nothing at the venue (answered with a retryable error, or a
    restart before its POST was recorded). ``post_uncertain``: some POST of the order may have reached the venue
    without a definite answer, or the executor cannot tell (a timeout, a dropped connection, a restart or an error
    of the executor under it); never cleared, so a not-found can never make the order "not taken" (FAILED) after
    it, only LOST.
    """

    client_order_id: str
    state: State = State.NEW
    venue_order_id: str = ""
    venue_status: str = ""
    limit_price: Decimal | None = None
    attempts: int = 0
    not_found: int = 0
    maybe_unsent: bool = False
    filled_size: Decimal = ZERO
    avg_price: Decimal = ZERO
    reason: str = ""
    detail: str = ""
    post_uncertain: bool = False

    @property
    def terminal(self) -> bool:
        """True once the order can no longer change."""
        return self.state.terminal

    @property
    def not_taken_if_not_found(self) -> bool:
        """True when a not-found means the venue never took the order: its last attempt left nothing there
        and no POST of it ever ended without a definite answer."""
        return self.maybe_unsent and not self.post_uncertain


def _evolve(life: OrderLife, **changes: object) -> OrderLife:
    """A copy of ``life`` with ``changes`` (what ``dataclasses.replace`` returns, written through the slots:
    a third of its cost, which counts once per event of every order of a fan-out); an unknown field raises
    KeyError."""
    copy = _NEW(OrderLife)
    for set_slot, value in zip(_SETTERS, _VALUES(life), strict=True):
        set_slot(copy, value)
    for name, value in changes.items():
        _SETTER_OF[name](copy, value)
    return copy


_FIELDS = tuple(OrderLife.__dataclass_fields__)
_VALUES = operator.attrgetter(*_FIELDS)
_SETTER_OF: dict[str, Callable[[OrderLife, object], None]] = {f: getattr(OrderLife, f).__set__ for f in _FIELDS}
_SETTERS = tuple(_SETTER_OF.values())
_NEW = object.__new__


def apply(life: OrderLife, event: Event) -> OrderLife:
    """The order after ``event``; raises :class:`IllegalTransition` when the table does not allow it."""
    target = TRANSITIONS.get((life.state, type(event)))
    if target is None:
        raise IllegalTransition(f"{life.client_order_id}: {type(event).__name__} not allowed in {life.state.value}")
    match event:
        case OrderSubmitted(limit_price=lp):
            return _evolve(life, state=target, attempts=life.attempts + 1, not_found=0, maybe_unsent=False,
                           limit_price=lp if lp is not None else life.limit_price)
        case SubmitAttemptFailed(reason=r, uncertain=u):
            return _evolve(life, state=target, attempts=life.attempts + 1, detail=r,
                           post_uncertain=life.post_uncertain or u)
        case OrderTimedOut(reason=r, surely_sent=sent, answered=ans):
            return _evolve(life, state=target, detail=r, not_found=0, maybe_unsent=not sent or ans,
                           post_uncertain=life.post_uncertain or not ans)
        case OrderAccepted(venue_order_id=vid, venue_status=st):
            return _evolve(life, state=target, venue_order_id=vid or life.venue_order_id, venue_status=st,
                           not_found=0)
        case OrderNotFound():
            return _evolve(life, state=target, not_found=life.not_found + 1)
        case OrderPartiallyFilled(filled_size=fs, avg_price=ap) | OrderFilled(filled_size=fs, avg_price=ap):
            if fs < life.filled_size:
                raise IllegalTransition(f"{life.client_order_id}: filled size went back from "
                                        f"{life.filled_size} to {fs}")
            return _evolve(life, state=target, filled_size=fs, avg_price=ap)
        case OrderCancelled(reason=r, filled_size=fs, avg_price=ap):
            if fs < life.filled_size:
                raise IllegalTransition(f"{life.client_order_id}: filled size went back")
            return _evolve(life, state=target, reason=r, filled_size=max(fs, life.filled_size),
                           avg_price=ap if fs > life.filled_size else life.avg_price)
        case OrderLost(reason=r) | OrderRejected(reason=r) | OrderFailed(reason=r):
            return _evolve(life, state=target, reason=r, detail=getattr(event, "detail", "") or life.detail)
    raise IllegalTransition(f"unknown event {event!r}")  # pragma: no cover - table and match agree
