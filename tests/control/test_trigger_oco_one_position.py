"""An OCO group is the exits of one position: a trigger cannot join a group armed on another position.

Guard keys its OCO groups by ``ocoGroup`` alone, so a group spanning two positions would let a fire on one
position cancel the stop-loss of the other (another asset, or another wallet's)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from services.control.trigger_rules import GroupMember, oco_refusal
from tests.control.conftest import ASSET, AUTH, FOLLOWER, Stubs, trigger
from tests.control.support import count, execute, expect
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration

OTHER_ASSET = "7" * 70
OTHER_WALLET = "0x" + "5" * 40


async def create(stubs: Stubs, **overrides: Any) -> tpb.Trigger:
    return await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(**overrides)), metadata=AUTH)


@pytest.mark.parametrize("other", [
    {"asset_id": OTHER_ASSET},
    {"wallet": OTHER_WALLET, "follower_wallet_id": "w_other"},
    {"wallet": OTHER_WALLET, "follower_wallet_id": "w_other", "asset_id": OTHER_ASSET},
])
async def test_a_trigger_joining_a_group_armed_on_another_position_is_400_naming_oco_group(
        stubs: Stubs, db_url: str, other: dict[str, Any]) -> None:
    await create(stubs, oco_group="grp_tpsl")
    await expect(create(stubs, oco_group="grp_tpsl", **other), grpc.StatusCode.INVALID_ARGUMENT, "ocoGroup:")
    assert count(db_url, "triggers") == 1


def test_the_refusal_names_a_trigger_of_the_same_wallet_only() -> None:
    t = trigger(oco_group="grp_tpsl")
    assert oco_refusal(t, None) is None
    same = oco_refusal(t, GroupMember("trg_1", FOLLOWER, "w_456", OTHER_ASSET))
    other = oco_refusal(t, GroupMember("trg_2", OTHER_WALLET, "w_other", ASSET))
    assert same is not None and other is not None
    assert str(same).startswith(
        f"ocoGroup: grp_tpsl is armed on another position, in assetId {OTHER_ASSET} (trigger trg_1)")
    assert "another wallet" in str(other) and "trg_2" not in str(other) and OTHER_WALLET not in str(other)


async def test_a_group_is_shared_by_the_exits_of_one_position(stubs: Stubs) -> None:
    stop = await create(stubs, oco_group="grp_tpsl")
    take = await create(stubs, oco_group="grp_tpsl", kind=tpb.TRIGGER_KIND_TAKE_PROFIT, trigger_price="0.8",
                        wallet=FOLLOWER.upper().replace("0X", "0x"))
    assert (stop.oco_group, take.oco_group, take.asset_id) == ("grp_tpsl", "grp_tpsl", ASSET)
    await create(stubs, oco_group="grp_other", asset_id=OTHER_ASSET)  # another group: another position


async def test_a_group_whose_triggers_are_no_longer_armed_may_be_used_on_another_position(
        stubs: Stubs, db_url: str) -> None:
    done = await create(stubs, oco_group="grp_tpsl")
    cancelled = await create(stubs, oco_group="grp_tpsl", trigger_price="0.1")
    execute(db_url, "UPDATE triggers SET state = 'DONE' WHERE id = %s", (done.id,))
    await stubs.triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=cancelled.id), metadata=AUTH)
    made = await create(stubs, oco_group="grp_tpsl", asset_id=OTHER_ASSET)
    assert made.state == tpb.TRIGGER_STATE_ARMED


async def test_concurrent_creates_joining_one_group_from_two_positions_create_one(stubs: Stubs, db_url: str) -> None:
    assets = [str(10**60 + i) for i in range(8)]
    results = await asyncio.gather(*(create(stubs, oco_group="grp_race", asset_id=a) for a in assets),
                                   return_exceptions=True)
    made = [r for r in results if isinstance(r, tpb.Trigger)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(made), len(refused)) == (1, len(assets) - 1), results
    assert all(r.code() == grpc.StatusCode.INVALID_ARGUMENT for r in refused)
    assert count(db_url, "triggers", "oco_group = 'grp_race'") == 1
