"""Guard's domain vocabulary: trigger kinds, price sources, the trigger state machine, reasons."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

from common.decimals import ONE, ZERO


class Kind(StrEnum):
    """What a trigger does when its price crosses."""

    TAKE_PROFIT = "TAKE_PROFIT"
    STOP_LOSS = "STOP_LOSS"
    TRAILING_STOP = "TRAILING_STOP"


class Source(StrEnum):
    """Which price of a tick a trigger watches."""

    BEST_BID = "BEST_BID"
    MID = "MID"
    LAST_TRADE = "LAST_TRADE"


class State(StrEnum):
    """Lifecycle of a trigger."""

    ARMED = "ARMED"
    FIRED = "FIRED"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Origin(StrEnum):
    """Who created a trigger."""

    MANUAL = "MANUAL"
    COPY = "COPY"


class Move(StrEnum):
    """A state-machine input (what happened to the trigger)."""

    FIRE = "FIRE"  # crossed; SELL decided
    FILL = "FILL"  # SELL filled
    FAIL = "FAIL"  # SELL failed, or could not be sent
    CANCEL = "CANCEL"  # DELETE, OCO sibling, resolution, position gone


class IllegalTransition(ValueError):
    """A move that the state machine does not allow from the current state."""


TRANSITIONS: dict[tuple[State, Move], State] = {
    (State.ARMED, Move.FIRE): State.FIRED,
    (State.ARMED, Move.CANCEL): State.CANCELLED,
    (State.ARMED, Move.FAIL): State.FAILED,
    (State.FIRED, Move.FILL): State.DONE,
    (State.FIRED, Move.FAIL): State.FAILED,
}

TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED})


def apply(state: State, move: Move) -> State:
    """The state after ``move``; raises IllegalTransition when the table has no such move."""
    try:
        return TRANSITIONS[(state, move)]
    except KeyError:
        raise IllegalTransition(f"{move.value} not allowed from {state.value}") from None


class Reason(StrEnum):
    """UPPER_SNAKE reasons recorded with a state change or a hold."""

    PRICE_CROSSED = "PRICE_CROSSED"
    BOOK_STALE = "BOOK_STALE"
    BOOK_FRESH = "BOOK_FRESH"
    OCO_SIBLING_FIRED = "OCO_SIBLING_FIRED"
    MARKET_RESOLVED = "MARKET_RESOLVED"
    POSITION_CLOSED = "POSITION_CLOSED"
    NO_POSITION = "NO_POSITION"
    DEFERRED_IN_FLIGHT_SELL = "DEFERRED_IN_FLIGHT_SELL"
    SIZE_BELOW_MIN_ORDER = "SIZE_BELOW_MIN_ORDER"
    REMAINDER_BELOW_MIN_SOLD_WHOLE = "REMAINDER_BELOW_MIN_SOLD_WHOLE"
    SIZE_CAPPED_TO_POSITION = "SIZE_CAPPED_TO_POSITION"
    ORDER_FILLED = "ORDER_FILLED"
    ORDER_REJECTED = "ORDER_REJECTED"
    ORDER_FAILED = "ORDER_FAILED"
    ORDER_LOST = "ORDER_LOST"
    ORDER_CANCELLED = "ORDER_CANCELLED"
    SUBMIT_REJECTED = "SUBMIT_REJECTED"
    CANCELLED_BY_USER = "CANCELLED_BY_USER"
    ARMED = "ARMED"
    UPDATED = "UPDATED"
    TRIGGER_CHANGED = "TRIGGER_CHANGED"


class OcoKey(NamedTuple):
    """An OCO group: its name on one position (wallet, follower wallet, asset)."""

    wallet: str
    follower_wallet_id: str
    asset_id: str
    name: str


class TriggerSpec(NamedTuple):
    """What the engine needs of an ARMED trigger (a named tuple: 100,000 of them build fast and small).

    ``high_water_mark`` > 0 marks an already-active trailing stop (its mark survives restarts); it is 0 or at
    least ``activation_price`` (:func:`live_mark`).
    ``closing`` is true when firing ends the position's exits: a size-based trigger or a
    sell fraction of 1. In an OCO group a closing fire cancels the siblings; a partial rung
    (fraction < 1) sells its share and leaves the siblings armed on the rest.
    ``wallet`` and ``follower_wallet_id`` (with ``asset_id``: the position guarded) scope the OCO group
    (:attr:`oco_key`).
    """

    id: str
    asset_id: str
    kind: Kind
    source: Source = Source.BEST_BID
    trigger_price: Decimal = ZERO
    trail_pct: Decimal = ZERO
    activation_price: Decimal = ZERO
    high_water_mark: Decimal = ZERO
    oco_group: str = ""
    closing: bool = True
    wallet: str = ""
    follower_wallet_id: str = ""

    @property
    def oco_key(self) -> OcoKey:
        """The OCO group (when ``oco_group`` names one) as one position's exits: a same-named trigger guarding
        another asset or wallet is no sibling (groups stored before control refused a group spanning positions)."""
        return OcoKey(self.wallet, self.follower_wallet_id, self.asset_id, self.oco_group)

    def with_mark(self, mark: Decimal) -> TriggerSpec:
        """A copy carrying the current high-water mark."""
        return self._replace(high_water_mark=mark)


def is_closing(size: Decimal, sell_fraction: Decimal) -> bool:
    """True when a trigger with this sizing closes its position's exits when it fires."""
    return size > 0 or sell_fraction >= ONE


_HUNDRED = Decimal(100)


def live_mark(mark: Decimal, activation_price: Decimal) -> Decimal:
    """The high-water mark a trailing stop may track with this activation price: ``mark`` when it reached the
    activation price, else 0 (inactive: the price has not reached the activation price since tracking began, as
    after a PATCH raising ``activationPrice`` above the mark)."""
    return mark if mark >= activation_price else ZERO


def fires_at(spec: TriggerSpec, price: Decimal, mark: Decimal = ZERO) -> bool:
    """The engine's rule for one trigger: a take-profit fires at ``price`` >= its price, a stop-loss at
    ``price`` <= its price, an active trailing stop (high-water ``mark`` at or above its activation price) at
    ``price`` <= mark x (1 - trail%)."""
    if spec.kind is Kind.TAKE_PROFIT:
        return price >= spec.trigger_price
    if spec.kind is Kind.STOP_LOSS:
        return price <= spec.trigger_price
    return mark > 0 and mark >= spec.activation_price and price <= mark * (ONE - spec.trail_pct / _HUNDRED)


def still_fires(decided: TriggerSpec, current: TriggerSpec, price: Decimal) -> bool:
    """Whether the trigger as stored now (``current``, read under its lock) fires at the ``price`` the engine
    fired ``decided`` on: False when a change made meanwhile (a PATCH not yet reloaded) moved it off that
    price, or changed what it watches."""
    if (current.kind, current.source) != (decided.kind, decided.source):
        return False
    if current == decided._replace(high_water_mark=current.high_water_mark, closing=current.closing):
        return True  # the same trigger (marks are saved now and then: the engine's may be ahead)
    return fires_at(current, price, max(decided.high_water_mark, current.high_water_mark))
