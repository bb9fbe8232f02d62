"""A create that asks for a state is refused naming ``state``: a subscription is created ACTIVE and a trigger
ARMED, so a body asking PAUSED or CANCELLED would otherwise start copying or arm a stop."""

from __future__ import annotations

import pytest

from services.control import subscription_rules, trigger_rules
from services.control.errors import InvalidArgument
from tests.control.conftest import subscription, trigger
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb


@pytest.mark.parametrize("state", [spb.SUBSCRIPTION_STATE_PAUSED, spb.SUBSCRIPTION_STATE_STOPPED,
                                   spb.SUBSCRIPTION_STATE_ACTIVE, 99])
def test_a_subscription_create_with_a_state_is_refused_naming_it(state: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        subscription_rules.new_subscription(subscription(state=state))
    assert err.value.field == "state"


def test_a_subscription_create_without_a_state_passes() -> None:
    sub = subscription_rules.new_subscription(subscription(state=spb.SUBSCRIPTION_STATE_UNSPECIFIED))
    assert sub.state == spb.SUBSCRIPTION_STATE_UNSPECIFIED  # the use case makes it ACTIVE


@pytest.mark.parametrize("state", [tpb.TRIGGER_STATE_CANCELLED, tpb.TRIGGER_STATE_ARMED, 99])
def test_a_trigger_create_with_a_state_is_refused_naming_it(state: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        trigger_rules.new_trigger(trigger(state=state))
    assert err.value.field == "state"


def test_a_trigger_create_without_a_state_passes() -> None:
    created = trigger_rules.new_trigger(trigger(state=tpb.TRIGGER_STATE_UNSPECIFIED))
    assert created.state == tpb.TRIGGER_STATE_UNSPECIFIED
