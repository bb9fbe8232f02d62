"""One execution mode per follower wallet: an open position holds the wallet in its own venue's mode, whatever
filled it (reconciliation's EXTERNAL shares, a manual order's); real gRPC, PostgreSQL and Redis."""

from __future__ import annotations

from typing import Any

import grpc
import psycopg
import pytest

from tests.control.conftest import ASSET, AUTH, FOLLOWER, Stubs, leader, subscription
from tests.control.support import count, expect
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

LIVE, PAPER = cpb.EXECUTION_MODE_LIVE, cpb.EXECUTION_MODE_PAPER


def _create_call(stubs: Stubs, n: int, mode: int) -> Any:
    return stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(n), mode=mode)), metadata=AUTH)


async def _create(stubs: Stubs, n: int, mode: int) -> spb.Subscription:
    return await _create_call(stubs, n, mode)


def _position(db_url: str, venue: str, origin: str, size: str = "10") -> None:
    """An open position of w_456 in ASSET booked in ``venue``."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, avg_price, cost_usd, id,"
                     " state, origin, venue) VALUES ('w_456', %s, %s, %s, 0.5, 5, 'pos_1', 'OPEN', %s, %s)",
                     (ASSET, FOLLOWER, size, origin, venue))


async def test_real_shares_reconciliation_found_hold_the_wallet_in_live(stubs: Stubs, db_url: str) -> None:
    """Reconciliation books shares the venue holds and the engine never bought as an EXTERNAL position of venue
    INSIDERS, without fills: paper BUYs of a PAPER subscription would be booked into it."""
    live = await _create(stubs, 1, LIVE)
    _position(db_url, "INSIDERS", "EXTERNAL")
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE positions SET venue_shares = size, reconciled_at = now()")
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=live.id), metadata=AUTH)
    message = await expect(_create_call(stubs, 2, PAPER), grpc.StatusCode.FAILED_PRECONDITION,
                           f"mode: followerWalletId w_456 holds a position in asset {ASSET} in EXECUTION_MODE_LIVE")
    assert "close it first" in message
    assert count(db_url, "subscriptions", "mode = 'PAPER'") == 0
    assert (await _create(stubs, 3, LIVE)).mode == LIVE


async def test_a_manual_paper_position_holds_the_wallet_in_paper(stubs: Stubs, db_url: str) -> None:
    """A manual order's fills name no subscription: the position's own venue is what says it is paper."""
    _position(db_url, "PAPER", "MANUAL")
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO fills (id, follower_wallet_id, order_id, asset_id, side, size, price, notional_usd,"
                     " venue, fill_time) VALUES ('fill_m', 'w_456', 'co_m', %s, 'BUY', 10, 0.5, 5, 'PAPER', now())",
                     (ASSET,))
    await expect(_create_call(stubs, 1, LIVE), grpc.StatusCode.FAILED_PRECONDITION,
                 "mode: followerWalletId w_456 holds a position in asset")
    paper = await _create(stubs, 2, PAPER)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE positions SET size = 0, state = 'CLOSED'")
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=paper.id), metadata=AUTH)
    assert (await _create(stubs, 3, LIVE)).mode == LIVE  # closed: nothing holds the wallet any more
