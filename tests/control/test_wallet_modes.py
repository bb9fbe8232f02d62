"""One execution mode per follower wallet: a create or a PATCH of ``mode`` is refused (FAILED_PRECONDITION,
naming ``mode``) while a subscription, an open position or an order in flight holds the wallet in the other
mode; real gRPC, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from tests.control.conftest import ASSET, AUTH, Stubs, leader, subscription
from tests.control.support import count, expect
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

LIVE, PAPER = cpb.EXECUTION_MODE_LIVE, cpb.EXECUTION_MODE_PAPER
REFUSED = grpc.StatusCode.FAILED_PRECONDITION


def _create_call(stubs: Stubs, n: int, mode: int, metadata: tuple[tuple[str, str], ...] = AUTH,
                 **overrides: Any) -> Any:
    return stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(n), mode=mode, **overrides)), metadata=metadata)


async def _create(stubs: Stubs, n: int, mode: int, metadata: tuple[tuple[str, str], ...] = AUTH,
                  **overrides: Any) -> spb.Subscription:
    return await _create_call(stubs, n, mode, metadata, **overrides)


def _set_mode(stubs: Stubs, sid: str, mode: int) -> Any:
    return stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sid, subscription=spb.Subscription(mode=mode), update_mask=FieldMask(paths=["mode"])), metadata=AUTH)


def _holding(db_url: str, sid: str, venue: str, *, size: str = "10", asset: str = ASSET) -> None:
    """What the executor leaves after a BUY of ``sid`` filled in ``venue``: the fill and the open position."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size,"
                     " price, notional_usd, venue, fill_time) VALUES (%s, %s, 'w_456', %s, %s, 'BUY', %s, 0.5,"
                     " 5, %s, now())", (f"fill_{sid}_{asset[:6]}", sid, f"co_{sid}", asset, size, venue))
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, venue) VALUES ('w_456', %s,"
                     " 'x', %s, %s) ON CONFLICT (follower_wallet_id, asset_id) DO UPDATE SET size = EXCLUDED.size,"
                     " venue = EXCLUDED.venue, opened_at = now()", (asset, size, venue))


def _order(db_url: str, venue: str, state: str) -> None:
    """An order as the executor writes it: its row, and pending while it is open (or its release is not recorded)."""
    terminal = state in ("FILLED", "CANCELLED", "REJECTED", "LOST", "FAILED")
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO orders (client_order_id, state, venue, origin, follower_wallet_id, asset_id, side,"
                     " order_type, order_proto, terminal_at) VALUES ('co_1', %s, %s, 'COPY', 'w_456', %s, 'BUY',"
                     " 'FOK', '', CASE WHEN %s THEN now() END)", (state, venue, ASSET, terminal))
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at)"
                     " SELECT client_order_id, follower_wallet_id, asset_id, terminal_at FROM orders"
                     " WHERE client_order_id = 'co_1'")


async def test_a_wallet_copying_in_paper_cannot_take_a_live_subscription(stubs: Stubs, db_url: str) -> None:
    paper = await _create(stubs, 1, PAPER)
    message = await expect(_create_call(stubs, 2, LIVE), REFUSED, "mode: followerWalletId w_456 has subscription")
    assert paper.id in message and "EXECUTION_MODE_PAPER" in message
    assert count(db_url, "subscriptions") == 1 and count(db_url, "audit_log") == 1
    assert (await _create(stubs, 3, PAPER)).mode == PAPER  # the same mode is fine
    # a paused one still holds the wallet, a stopped one without positions no longer does
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=paper.id), metadata=AUTH)
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=(await _create(stubs, 4, PAPER)).id),
                                        metadata=AUTH)
    await expect(_create_call(stubs, 2, LIVE), REFUSED, "mode:")
    for sub in (await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(
            follower_proxy=subscription().follower_proxy), metadata=AUTH)).subscriptions:
        if sub.state != spb.SUBSCRIPTION_STATE_STOPPED:
            await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert (await _create(stubs, 2, LIVE)).mode == LIVE
    # another wallet is not concerned
    assert (await _create(stubs, 5, PAPER, follower_wallet_id="w_789")).mode == PAPER


async def test_shares_filled_in_the_other_venue_hold_the_wallet_until_the_position_closes(
        stubs: Stubs, db_url: str) -> None:
    paper = await _create(stubs, 1, PAPER)
    _holding(db_url, paper.id, "PAPER")
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=paper.id), metadata=AUTH)
    message = await expect(_create_call(stubs, 2, LIVE), REFUSED, "mode: followerWalletId w_456 holds a position")
    assert ASSET in message
    assert (await _create(stubs, 3, PAPER)).mode == PAPER  # paper shares do not stop a paper copy
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE positions SET size = 0")
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(
        id=(await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(
            follower_proxy=subscription().follower_proxy, state=spb.SUBSCRIPTION_STATE_ACTIVE),
            metadata=AUTH)).subscriptions[0].id), metadata=AUTH)
    live = await _create(stubs, 2, LIVE)
    # the position reopens with live shares: the old paper fills are from before it opened
    _holding(db_url, live.id, "INSIDERS")
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=live.id), metadata=AUTH)
    assert (await _create(stubs, 4, LIVE)).mode == LIVE
    await expect(_create_call(stubs, 5, PAPER), REFUSED, "mode:")


async def test_an_order_in_flight_in_the_other_venue_holds_the_wallet(stubs: Stubs, db_url: str) -> None:
    _order(db_url, "PAPER", "PLACED")
    message = await expect(_create_call(stubs, 1, LIVE), REFUSED, "mode: followerWalletId w_456 has order co_1")
    assert "in flight" in message
    assert (await _create(stubs, 2, PAPER)).mode == PAPER
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE orders SET state = 'FILLED', terminal_at = now()")
        conn.execute("UPDATE order_pending SET terminal_at = now()")  # ended: its release still to record
    await expect(_create_call(stubs, 1, LIVE), REFUSED, "mode: followerWalletId w_456 has subscription")


async def test_a_mode_patch_is_refused_while_the_wallet_holds_shares_of_the_old_mode(
        stubs: Stubs, db_url: str) -> None:
    paper = await _create(stubs, 1, PAPER)
    other = await _create(stubs, 2, PAPER)
    await expect(_set_mode(stubs, paper.id, LIVE), REFUSED, f"mode: followerWalletId w_456 has subscription {other.id}")
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=other.id), metadata=AUTH)
    _holding(db_url, paper.id, "PAPER")
    await expect(_set_mode(stubs, paper.id, LIVE), REFUSED, "mode: followerWalletId w_456 holds a position")
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=paper.id), metadata=AUTH)
    assert got.mode == PAPER and count(db_url, "audit_log", "method = 'UpdateSubscription'") == 0
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE positions SET size = 0")
    assert (await _set_mode(stubs, paper.id, LIVE)).mode == LIVE
    assert (await _set_mode(stubs, paper.id, PAPER)).mode == PAPER  # and back, nothing held


async def test_a_refused_keyed_create_claims_no_key_and_a_retry_after_the_conflict_creates(
        stubs: Stubs, db_url: str) -> None:
    paper = await _create(stubs, 1, PAPER)
    keyed = (*AUTH, ("idempotency-key", "mode-1"))
    await expect(_create_call(stubs, 2, LIVE, keyed), REFUSED, "mode:")
    assert count(db_url, "idempotency_keys") == 0 and count(db_url, "subscriptions") == 1
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=paper.id), metadata=AUTH)
    created = await _create(stubs, 2, LIVE, keyed)
    assert created.mode == LIVE and await _create(stubs, 2, LIVE, keyed) == created  # replayed
    await expect(_create_call(stubs, 3, PAPER, (("idempotency-key", "mode-2"), *AUTH)), REFUSED, "mode:")


async def test_concurrent_creates_in_both_modes_leave_the_wallet_in_one(stubs: Stubs, db_url: str) -> None:
    for round_ in range(10):
        calls = [_create_call(stubs, 100 * round_ + i, LIVE if i % 2 else PAPER) for i in range(16)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        made = [r for r in results if isinstance(r, spb.Subscription)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert made and len(made) + len(refused) == len(calls), results
        assert all(r.code() == REFUSED for r in refused)
        assert len({s.mode for s in made}) == 1, [s.mode for s in made]
        modes = {m for (m,) in psycopg.connect(db_url).execute(
            "SELECT DISTINCT mode FROM subscriptions WHERE state <> 'STOPPED'").fetchall()}
        assert len(modes) == 1
        for sub in made:
            await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
