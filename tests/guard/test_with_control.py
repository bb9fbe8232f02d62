"""Guard with the real control service: triggers created / patched / cancelled over control's gRPC reach the
engine through ``tt:triggers:changed``, the fire shows in control's GetTrigger, and a loss-stop pauses the
subscription through the real internal perf-action RPC."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import grpc
import pytest

from common.grpcauth import token_id
from common.ids import hash_id, new_id
from common.marketstate import BookSnapshot, write_book
from services.control.app import RunningControl
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    LEADER,
    TOKEN,
    WALLET,
    WALLET_ID,
    StandIns,
    add_market,
    db,
    set_position,
    wait_connected,
)
from tests.helpers import INTERNAL_TOKEN, eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def test_rest_triggers_and_perf_actions_through_the_real_control(
        db_url: str, redis: Any, standins: StandIns, control: RunningControl, make_guard: GuardFactory) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{control.port}")
    subs = pb_grpc.SubscriptionServiceStub(channel)
    triggers = pb_grpc.TriggerServiceStub(channel)
    conn = await db(db_url)
    await set_position(conn, "100", "0.5", venue="PAPER")  # the subscription below copies in PAPER
    await add_market(redis, min_size="1")
    running = await make_guard(control_target=f"127.0.0.1:{control.port}")
    guard = running.guard
    try:
        sub = await subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=spb.Subscription(
            follower_user_id="u_123", follower_wallet_id=WALLET_ID, follower_proxy=WALLET, leader_proxy=LEADER,
            mode=cpb.EXECUTION_MODE_PAPER, sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25"),
            perf=spb.Perf(loss_stop_usd="100"))), metadata=AUTH)

        created = await triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=tpb.Trigger(
            wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET, kind=tpb.TRIGGER_KIND_STOP_LOSS,
            trigger_price="0.30", sell_fraction="1")), metadata=AUTH)
        await eventually(lambda: created.id in guard.engine)
        await triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=created.id, trigger=tpb.Trigger(
            trigger_price="0.35")), metadata=AUTH)
        await eventually(lambda: (s := guard.engine.get(created.id)) is not None
                         and s.trigger_price == Decimal("0.35"))
        other = await triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=tpb.Trigger(
            wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET, kind=tpb.TRIGGER_KIND_TAKE_PROFIT,
            trigger_price="0.9", size="10")), metadata=AUTH)
        await eventually(lambda: other.id in guard.engine)
        await triggers.DeleteTrigger(pb.DeleteTriggerRequest(id=other.id), metadata=AUTH)
        await eventually(lambda: other.id not in guard.engine)

        await wait_connected(standins.ingest)
        await standins.ingest.tick(bid="0.36", ask="0.38")
        await standins.ingest.tick(bid="0.34", ask="0.36")  # crosses the patched price
        await eventually(lambda: len(standins.executor.sells) == 1)
        assert (standins.executor.sells[0].client_order_id, standins.executor.sells[0].size) == (
            hash_id("co", created.id, "1"), "100")

        async def done() -> tpb.Trigger | None:
            t = await triggers.GetTrigger(pb.GetTriggerRequest(id=created.id), metadata=AUTH)
            return t if t.state == tpb.TRIGGER_STATE_DONE else None

        seen = await eventually(done)
        assert seen.order_id == hash_id("co", created.id, "1") and seen.HasField("fired_time")
        with pytest.raises(grpc.aio.AioRpcError):  # control refuses to PATCH what guard fired
            await triggers.UpdateTrigger(pb.UpdateTriggerRequest(id=created.id, trigger=tpb.Trigger(
                trigger_price="0.2")), metadata=AUTH)

        # loss-stop: the subscription bought 1,000 at 0.50, the mark is 0.30 → PnL -200 <= -100
        await conn.execute(
            "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, side,"
            " size, price, notional_usd, venue, fill_time) VALUES (%s, %s, %s, 'co_x', %s, %s, 'BUY', 1000, 0.5,"
            " 500, 'PAPER', now())", (new_id("fill"), sub.id, WALLET_ID, ASSET, CONDITION))
        now = int(time.time() * 1000)
        await write_book(redis, BookSnapshot(ASSET, CONDITION, ((Decimal("0.29"), Decimal(10)),),
                                             ((Decimal("0.31"), Decimal(10)),), Decimal("0.01"), now, now))

        async def paused() -> spb.Subscription | None:
            s = await subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
            return s if s.state == spb.SUBSCRIPTION_STATE_PAUSED else None

        after = await eventually(paused)
        assert "LOSS_STOP" in after.paused_reason
        rows = await (await conn.execute("SELECT action, token_id FROM perf_actions WHERE subscription_id = %s",
                                         (sub.id,))).fetchall()
        assert [r["action"] for r in rows] == ["PAUSE"]
        assert [r["token_id"] for r in rows] == [token_id(INTERNAL_TOKEN)]  # guard's internal token, not TOKEN
        async def settled() -> dict[str, Any] | None:  # guard records control's answer after it returns
            row = await (await conn.execute("SELECT applied, pnl_usd FROM guard_perf_decisions")).fetchone()
            return dict(row) if row is not None and row["applied"] is not None else None

        decision = await eventually(settled)
        assert decision["applied"] is True and decision["pnl_usd"] == Decimal(-200)
    finally:
        await channel.close()
        await conn.close()
