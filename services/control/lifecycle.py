"""State machines of subscriptions and triggers as seen by the control surface (pure).

One transition table each; ``apply`` is the only way a state changes and an illegal move raises
``FailedPrecondition``. Guard owns the trigger moves ARMED → FIRED → DONE / FAILED; control only
edits and cancels.
"""

from __future__ import annotations

from enum import Enum

from services.control.errors import FailedPrecondition
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb


class SubscriptionCommand(Enum):
    """What a caller asks of a subscription."""

    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    UPDATE = "update"


class TriggerCommand(Enum):
    """What a caller asks of a trigger."""

    UPDATE = "update"
    CANCEL = "cancel"


_A, _P, _S = spb.SUBSCRIPTION_STATE_ACTIVE, spb.SUBSCRIPTION_STATE_PAUSED, spb.SUBSCRIPTION_STATE_STOPPED
SUBSCRIPTION_TRANSITIONS: dict[tuple[int, SubscriptionCommand], int] = {
    (_A, SubscriptionCommand.PAUSE): _P,
    (_P, SubscriptionCommand.PAUSE): _P,
    (_A, SubscriptionCommand.RESUME): _A,
    (_P, SubscriptionCommand.RESUME): _A,
    (_A, SubscriptionCommand.STOP): _S,
    (_P, SubscriptionCommand.STOP): _S,
    (_S, SubscriptionCommand.STOP): _S,
    (_A, SubscriptionCommand.UPDATE): _A,
    (_P, SubscriptionCommand.UPDATE): _P,
}

_ARMED, _CANCELLED = tpb.TRIGGER_STATE_ARMED, tpb.TRIGGER_STATE_CANCELLED
TRIGGER_TRANSITIONS: dict[tuple[int, TriggerCommand], int] = {
    (_ARMED, TriggerCommand.UPDATE): _ARMED,
    (_ARMED, TriggerCommand.CANCEL): _CANCELLED,
    (_CANCELLED, TriggerCommand.CANCEL): _CANCELLED,
}


def apply_subscription(state: int, command: SubscriptionCommand, subscription_id: str = "") -> int:
    """The state after ``command``; raises FailedPrecondition when the move is illegal."""
    try:
        return SUBSCRIPTION_TRANSITIONS[(state, command)]
    except KeyError:
        name = spb.SubscriptionState.Name(state)
        raise FailedPrecondition(
            f"subscription {subscription_id} is {name}: cannot {command.value} it".replace("  ", " ")
        ) from None


def apply_trigger(state: int, command: TriggerCommand, trigger_id: str = "") -> int:
    """The state after ``command``; raises FailedPrecondition when the move is illegal."""
    try:
        return TRIGGER_TRANSITIONS[(state, command)]
    except KeyError:
        name = tpb.TriggerState.Name(state)
        raise FailedPrecondition(
            f"trigger {trigger_id} is {name}: only an ARMED trigger can be changed or cancelled"
            .replace("  ", " ")
        ) from None
