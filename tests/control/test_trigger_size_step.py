"""A trigger's ``size`` below one share step (0.01 share: ``common.decimals.MIN_HELD_SHARES``, the step orders carry
sizes in) can never be sold: guard's SELL would be refused when the trigger fires. CONTROL_API.md: decimals must be in
range, anything else is 400 naming the field; so a create or a PATCH with such a size is refused naming ``size``."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from services.control import trigger_rules
from services.control.errors import InvalidArgument
from tests.control.conftest import AUTH, Stubs, trigger
from tests.control.support import count, expect
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import trigger_pb2 as tpb

BELOW_A_STEP = ["0.009", "0.001", "1e-8", "0.0099999"]


def armed() -> tpb.Trigger:
    current = trigger_rules.new_trigger(trigger())
    current.id, current.state = "trg_1", tpb.TRIGGER_STATE_ARMED
    return current


@pytest.mark.parametrize("size", BELOW_A_STEP)
def test_a_create_with_a_size_below_one_share_step_is_refused_naming_size(size: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        trigger_rules.new_trigger(trigger(size=size))
    assert err.value.message.startswith(f'size: must be a decimal >= 0.01, got "{size}"'), err.value.message


@pytest.mark.parametrize("size", BELOW_A_STEP)
def test_a_patch_to_a_size_below_one_share_step_is_refused_naming_size(size: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        trigger_rules.merge_trigger_patch(armed(), tpb.Trigger(size=size))
    assert err.value.message.startswith(f'size: must be a decimal >= 0.01, got "{size}"'), err.value.message


@pytest.mark.parametrize(("size", "stored"), [("0.01", "0.01"), ("0.010", "0.01"), ("1e-2", "0.01"),
                                              ("12.5", "12.5")])
def test_a_size_of_at_least_one_share_step_is_taken(size: str, stored: str) -> None:
    assert trigger_rules.new_trigger(trigger(size=size)).size == stored
    assert trigger_rules.merge_trigger_patch(armed(), tpb.Trigger(size=size)).size == stored


def test_a_size_of_zero_still_means_a_sell_fraction_trigger() -> None:
    merged = trigger_rules.merge_trigger_patch(armed(), tpb.Trigger(size="0", sell_fraction="0.5"))
    assert (merged.size, merged.sell_fraction) == ("0", "0.5")


@pytest.mark.integration
async def test_create_and_patch_with_a_size_below_one_share_step_are_invalid(stubs: Stubs, db_url: str) -> None:
    async def create(**overrides: Any) -> tpb.Trigger:
        return await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(**overrides)),
                                                  metadata=AUTH)

    await expect(create(size="0.005"), grpc.StatusCode.INVALID_ARGUMENT, 'size: must be a decimal >= 0.01')
    assert count(db_url, "triggers") == 0
    made = await create(size="10")
    await expect(stubs.triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=made.id, trigger=tpb.Trigger(size="0.005")),
                                              metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT,
                 'size: must be a decimal >= 0.01')
    got = await stubs.triggers.GetTrigger(pb.GetTriggerRequest(id=made.id), metadata=AUTH)
    assert got.size == "10"
