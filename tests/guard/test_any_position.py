"""One TP/SL for every position (issue 34, item 5): a trigger guards any OPEN positions row of the wallet,
whatever its origin, and sells what that row holds (the venue's count once reconciled); a position that is
no longer open is refused at creation or cancelled when the trigger fires."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.ids import hash_id
from services.control.app import RunningControl
from tests.edge.conftest import Envoy, start_envoy
from tests.guard.conftest import GuardFactory
from tests.guard.standins import (
    ASSET,
    CONDITION,
    TOKEN,
    WALLET,
    WALLET_ID,
    StandIns,
    add_market,
    db,
    insert_subscription,
    insert_trigger,
    set_position,
    trigger_row,
    wait_connected,
)
from tests.helpers import eventually
from tests.position_rows import T0, insert_async, life
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration
VENUE_COUNT = "714.28"


@pytest.fixture
async def envoy(control: RunningControl, tmp_path: Path) -> AsyncIterator[Envoy]:
    """Envoy in front of the in-process control (started from a thread: its readiness check goes through
    Envoy to control, which answers on this event loop)."""
    edge = await asyncio.to_thread(start_envoy, tmp_path / "envoy", control.port, (TOKEN,))
    yield edge
    await asyncio.to_thread(edge.stop)


async def test_a_rest_trigger_on_an_external_position_sells_the_venues_count(
        db_url: str, redis: Any, standins: StandIns, envoy: Envoy, make_guard: GuardFactory) -> None:
    """Shares the engine never booked, found at the venue by reconciliation (an EXTERNAL row holding the
    venue's count), get a stop-loss through REST; it fires and sells the venue's count, for the wallet's
    user, on the venue the shares are at."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_live", mode="LIVE")  # copies another market; gives the wallet's user
    external = await insert_async(conn, "positions", life(
        wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET, condition_id=CONDITION, origin="EXTERNAL",
        subscription_id=None, size=Decimal(VENUE_COUNT), avg_price=Decimal("0.0349"), cost_usd=Decimal("24.93"),
        venue_shares=Decimal(VENUE_COUNT), reconciled_at=T0))
    await add_market(redis, min_size="5")
    guard = (await make_guard()).guard
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=envoy.url, headers=headers, timeout=10) as client:
        listed = (await client.get("/positions", params={"wallet": WALLET, "state": "POSITION_STATE_OPEN"})).json()
        assert [(p["id"], p["origin"], p["shares"]) for p in listed["positions"]] == [
            (external["id"], "POSITION_ORIGIN_EXTERNAL", VENUE_COUNT)]
        reply = await client.post("/triggers", json={
            "wallet": WALLET, "followerWalletId": WALLET_ID, "assetId": ASSET, "kind": "TRIGGER_KIND_STOP_LOSS",
            "triggerPrice": "0.03", "sellFraction": "1"})
        assert reply.status_code == 200, reply.text
        trigger = reply.json()
    await eventually(lambda: trigger["id"] in guard.engine)
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.035", ask="0.04")
    await standins.ingest.tick(bid="0.03", ask="0.032")  # crosses the stop
    await eventually(lambda: len(standins.executor.sells) == 1)
    sell = standins.executor.sells[0]
    assert (sell.client_order_id, sell.trigger_id, sell.size, sell.side) == (
        hash_id("co", trigger["id"], "1"), trigger["id"], VENUE_COUNT, cpb.SIDE_SELL)
    assert (sell.follower_user_id, sell.follower_wallet_id, sell.follower_proxy, sell.subscription_id) == (
        "u_123", WALLET_ID, WALLET, "")
    assert sell.mode == cpb.EXECUTION_MODE_LIVE and sell.condition_id == CONDITION

    async def done() -> bool:
        return (await trigger_row(conn, trigger["id"]))["state"] == "DONE"

    await eventually(done)
    await conn.close()


async def test_a_trigger_on_a_paper_position_without_a_subscription_sells_on_paper(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """The SELL goes where the shares are: a paper position's trigger without a subscription sells on paper
    (a LIVE SELL of paper shares would sell what the wallet holds at the venue)."""
    conn = await db(db_url)
    await insert_async(conn, "positions", life(wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET,
                                               condition_id=CONDITION, origin="MANUAL", venue="PAPER",
                                               size=Decimal(40)))
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_paper", "STOP_LOSS", price="0.3", fraction="1")
    await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.3", ask="0.32")
    await eventually(lambda: len(standins.executor.sells) == 1)
    assert (standins.executor.sells[0].mode, standins.executor.sells[0].size) == (cpb.EXECUTION_MODE_PAPER, "40")
    await conn.close()


@pytest.mark.parametrize(("state", "reason"), [("RESOLVED_WON", "MARKET_RESOLVED"),
                                                ("RESOLVED_LOST", "MARKET_RESOLVED"),
                                                ("CLOSED", "NO_POSITION")])
async def test_a_trigger_on_a_position_that_ended_since_is_cancelled(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory, state: str, reason: str) -> None:
    """The position ended after the trigger was created (its market settled, or it was sold out): nothing is
    sent and the trigger is cancelled with the reason. A settled row keeps a size only in resolved_shares;
    the row here keeps its size too, so only its state tells it is over."""
    conn = await db(db_url)
    await set_position(conn, "100")
    await add_market(redis, min_size="5")
    await insert_trigger(conn, "trg_late", "STOP_LOSS", price="0.3", size="20")
    await conn.execute("UPDATE positions SET state = %s, resolved_shares = size", (state,))
    running = await make_guard()
    await wait_connected(standins.ingest)
    await standins.ingest.tick(bid="0.2", ask="0.3")

    async def cancelled() -> dict[str, Any] | None:
        row = await trigger_row(conn, "trg_late")
        return row if row["state"] == "CANCELLED" else None

    row = await eventually(cancelled)
    await running.guard.drain()
    assert row["state_reason"] == reason
    assert standins.executor.calls == []
    await conn.close()


async def test_rest_refuses_a_trigger_on_a_resolved_position_and_a_fraction_of_a_closed_one(
        db_url: str, control: RunningControl, envoy: Envoy) -> None:
    conn = await db(db_url)
    await insert_async(conn, "positions", life(wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id=ASSET,
                                               state="RESOLVED_WON", size=Decimal(0), resolved_shares=Decimal(40)))
    await insert_async(conn, "positions", life(wallet=WALLET, follower_wallet_id=WALLET_ID, asset_id="7",
                                               state="CLOSED", size=Decimal(0)))
    body = {"wallet": WALLET, "followerWalletId": WALLET_ID, "kind": "TRIGGER_KIND_TAKE_PROFIT",
            "triggerPrice": "0.9"}
    async with httpx.AsyncClient(base_url=envoy.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=10) as client:
        for extra in ({"size": "10"}, {"sellFraction": "1"}):
            reply = await client.post("/triggers", json={**body, "assetId": ASSET, **extra})
            assert reply.status_code == 400, reply.text
            assert reply.json()["message"].startswith("assetId: MARKET_RESOLVED:")
        closed = await client.post("/triggers", json={**body, "assetId": "7", "sellFraction": "0.5"})
        assert closed.status_code == 400
        assert closed.json()["message"].startswith("sellFraction: followerWalletId w_456 holds no position")
        assert "POSITION_STATE_CLOSED" in closed.json()["message"]
        later = await client.post("/triggers", json={**body, "assetId": "7", "size": "10"})  # shares to come
        assert later.status_code == 200, later.text
    rows = await (await conn.execute("SELECT asset_id FROM triggers")).fetchall()
    assert [r["asset_id"] for r in rows] == ["7"]
    await conn.close()

