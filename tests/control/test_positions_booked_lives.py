"""The positions routes over lives the executor itself booked and settled (fill_store, SettlementStore), not rows
written by hand: a life bought, partly sold at a gain, sold out at a loss (CLOSED, its realized PnL its own), a
new life of the same token resolved WON (its shares and cost as held at the resolution, the payout realized);
the wallet's route and the subscription's agree on every row they both list."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.control.conftest import AUTH, FOLLOWER, Stubs, subscription
from tests.executor.conftest import make_order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import position_pb2 as ppb

pytestmark = pytest.mark.integration

ASSET, NO = "3" * 77, "4" * 77
CONDITION = "0x" + "d" * 64


async def _book(pool: Any, i: int, sub: str, side: int, shares: str, price: str) -> None:
    order = make_order(i, follower_wallet_id="w_456", follower_proxy=FOLLOWER, subscription_id=sub, side=side,
                       asset_id=ASSET, condition_id=CONDITION, outcome="Yes")
    booking = Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True,
                      time.time_ns() // 1_000_000 + i)
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, [(Ticket(order, INSIDERS, None, time.time_ns()), booking)])


async def test_booked_and_settled_lives_as_listed(stubs: Stubs, db_url: str) -> None:
    sub = (await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                               metadata=AUTH)).id
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        await _book(pool, 1, sub, cpb.SIDE_BUY, "100", "0.40")
        await _book(pool, 2, sub, cpb.SIDE_SELL, "40", "0.50")  # +4
        await _book(pool, 3, sub, cpb.SIDE_SELL, "60", "0.30")  # -6: closed, -2 in all
        await _book(pool, 4, sub, cpb.SIDE_BUY, "50", "0.60")  # a new life
        await SettlementStore(pool).settle(Resolution(CONDITION, (ASSET, NO), ASSET))
    finally:
        await pool.close()
    stub = pb_grpc.PositionServiceStub(stubs.channel)
    wallet = await stub.ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER), metadata=AUTH)
    mine = await stub.ListSubscriptionPositions(pb.ListSubscriptionPositionsRequest(id=sub), metadata=AUTH)
    assert list(wallet.positions) == list(mine.positions)
    won, closed = wallet.positions
    assert (closed.state, closed.shares, closed.cost_usd, closed.realized_pnl_usd) == (
        ppb.POSITION_STATE_CLOSED, "0", "0", "-2")
    assert closed.subscription_id == sub and closed.HasField("close_time")
    assert closed.update_time.ToDatetime() >= closed.close_time.ToDatetime()
    assert (won.state, won.shares, won.avg_cost, won.cost_usd, won.realized_pnl_usd, won.unrealized_pnl_usd) == (
        ppb.POSITION_STATE_RESOLVED_WON, "50", "0.6", "30", "20", "0")
    assert (won.resolution.winning_asset_id, won.resolution.payout_per_share) == (ASSET, "1")
    assert won.redemption.state == ppb.REDEMPTION_STATE_PENDING
    assert won.open_time.ToDatetime() >= closed.close_time.ToDatetime()
    assert won.close_time == won.resolution.resolve_time
