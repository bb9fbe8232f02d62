"""An order ended by hand: what an operator read at the venue about it, checked, and read as the venue answer it stands
for (pure). The answer takes a status query's path (:func:`.answer_policy.accepted`,
:func:`.answer_policy.decide_status`) without the plausibility screen; the order's last event carries
:data:`OPERATOR_RESOLVED` and the operator's words."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from decimal import Decimal

from common.decimals import ONE, ZERO, fmt, parse_decimal
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import accepted, decide_status
from services.executor.domain.order_lifecycle import Event, OrderCancelled, OrderLife, State

OPERATOR_RESOLVED = "OPERATOR_RESOLVED"
ENDABLE = frozenset({State.UNKNOWN, State.PLACED, State.PARTIALLY_FILLED})  # the venue may hold them
MAX_REASON = 400  # characters of the operator's words kept (the event's detail holds 500)


class Outcome(enum.Enum):
    """What the venue shows for the order."""

    NOT_FILLED = "NOT_FILLED"
    FILLED = "FILLED"


class UnknownOrder(LookupError):
    """No order has that client order id."""


class NotEndable(Exception):
    """The order cannot be ended by hand in its state (final already, or not at the venue yet)."""


@dataclass(frozen=True, slots=True)
class Statement:
    """The outcome an operator read at the venue, and why they end the order."""

    outcome: Outcome
    filled_size: Decimal
    avg_price: Decimal
    reason: str


def read_statement(outcome: str, filled_size: str, avg_price: str, reason: str) -> Statement:
    """The statement of a request's fields (``outcome`` an :class:`Outcome` name); ValueError names the bad field."""
    words = " ".join(reason.split())
    if not words:
        raise ValueError("reason: required (who read what at the venue)")
    if outcome not in Outcome.__members__:
        raise ValueError(f"outcome: {outcome or 'unset'} is neither NOT_FILLED nor FILLED")
    said = Outcome[outcome]
    if said is Outcome.NOT_FILLED:
        for field, text in (("filled_size", filled_size), ("avg_price", avg_price)):
            if text.strip() and _decimal(field, text) != 0:
                raise ValueError(f"{field}: NOT_FILLED takes none (end it FILLED instead)")
        return Statement(said, ZERO, ZERO, words[:MAX_REASON])
    size = _decimal("filled_size", filled_size)
    if size <= 0:
        raise ValueError(f"filled_size: {fmt(size)} is not above 0 (end it NOT_FILLED instead)")
    price = _decimal("avg_price", avg_price)
    if not ZERO < price <= ONE:
        raise ValueError(f"avg_price: {fmt(price)} is outside (0, 1]")
    return Statement(said, size, price, words[:MAX_REASON])


def _decimal(field: str, text: str) -> Decimal:
    try:
        return parse_decimal(text)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def check(life: OrderLife, request: v.PlaceRequest | None, st: Statement) -> None:
    """Raise unless ``st`` can end ``life``: :class:`NotEndable` for its state, ValueError (naming the field) for a
    fill the order cannot have made or one below what is booked already."""
    if life.terminal:
        raise NotEndable(f"order {life.client_order_id} is {life.state.value} already "
                         f"({life.reason or 'no reason'}): nothing changed")
    if life.state not in ENDABLE:
        raise NotEndable(f"order {life.client_order_id} is {life.state.value}: not at the venue yet; end it once it "
                         f"is UNKNOWN or PLACED")
    if st.outcome is Outcome.NOT_FILLED:
        if life.filled_size > 0:
            raise ValueError(f"outcome: {fmt(life.filled_size)} shares are booked filled already; end it FILLED "
                             f"with the total")
        return
    if st.filled_size < life.filled_size:
        raise ValueError(f"filled_size: {fmt(st.filled_size)} is below the {fmt(life.filled_size)} shares booked "
                         f"already")
    if life.filled_size > 0:  # what is booked stays: the rest must make up the average stated
        more = st.filled_size - life.filled_size
        added = (st.filled_size * st.avg_price - life.filled_size * life.avg_price) / more if more else None
        if (added is None and st.avg_price != life.avg_price) or (added is not None
                                                                   and not v.LOWEST_PRICE <= added <= 1):
            raise ValueError(f"avg_price: {fmt(life.filled_size)} shares are booked at {fmt(life.avg_price)} "
                             f"already; {fmt(st.filled_size)} in all cannot average {fmt(st.avg_price)}")
    if request is None:
        return
    if request.size is not None and st.filled_size > request.size:
        raise ValueError(f"filled_size: {fmt(st.filled_size)} is above the order's size {fmt(request.size)}")
    spent = st.filled_size * st.avg_price
    if request.size is None and request.amount_usd is not None and spent > request.amount_usd:
        raise ValueError(f"filled_size: {fmt(st.filled_size)} at {fmt(st.avg_price)} is ${fmt(spent)}, above the "
                         f"order's ${fmt(request.amount_usd)}")


def answer(life: OrderLife, st: Statement) -> v.VenueOrder:
    """The venue answer ``st`` stands for: the order final with what filled (no amounts, no fee: the fill is booked
    at ``avg_price``)."""
    return v.VenueOrder(life.venue_order_id, life.client_order_id, v.CONFIRMED, st.filled_size, st.avg_price)


def ended(life: OrderLife, st: Statement) -> tuple[OrderLife, list[Event]]:
    """``life`` carrying the operator's reason and words, and the events that end it as :func:`answer` would."""
    marked = replace(life, reason=OPERATOR_RESOLVED, detail=st.reason)
    said = answer(life, st)
    events = accepted(marked, said) if life.state is State.UNKNOWN else decide_status(marked, said)
    return marked, [OrderCancelled(OPERATOR_RESOLVED, e.filled_size, e.avg_price) if isinstance(e, OrderCancelled)
                    else e for e in events]
