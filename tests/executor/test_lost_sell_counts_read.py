"""A LOST SELL stops counting only on a count that compared its position after it: not on a round that skipped the
token (an order of it in flight), nor on a correction for another sale from a count inside the grace, nor on a
correction from a count taken before it (real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.adapters.reconcile_store import ReconcileStore
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler
from tests.executor.test_lost_sell_count_time import (
    ASSET,
    CONDITION,
    WALLET,
    Count,
    _held_with_a_lost_sell,
    _known,
    _rows,
)

pytestmark = pytest.mark.integration


class Sold:
    """The venue's count, now: the LOST SELL sold 60 of the 100."""

    async def positions(self, wallet_id: str) -> Answer:
        return Answer(200, {"asOf": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "positions": [
            {"tokenId": ASSET, "conditionId": CONDITION, "outcome": "Yes", "size": "40", "avgPrice": "0.4",
             "redeemable": False}]})


async def test_a_round_that_skipped_the_busy_token_leaves_the_lost_sell_counted(db_url: str) -> None:
    _held_with_a_lost_sell(db_url, 30)
    _rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id,"
                  " asset_id, side, order_type, size, order_proto, created_at) VALUES ('buy_1', 'PLACED',"
                  f" 'INSIDERS', 'COPY', 'sub_1', 'w_1', '{ASSET}', 'BUY', 'FAK', 10, '', now())")
    _rows(db_url, f"INSERT INTO order_pending VALUES ('buy_1', 'w_1', '{ASSET}', NULL) ON CONFLICT DO NOTHING")
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = OrderStore(pool)
        await Reconciler(ReconcileStore(pool), Sold(), None, interval_s=300.0, known=_known).reconcile(WALLET)
        assert _rows(db_url, "SELECT size FROM positions") == [(D(100),)]  # not compared: busy
        assert await store.sellable("w_1", ASSET) == D(40)
    finally:
        await pool.close()


async def test_a_correction_for_another_sale_inside_the_grace_leaves_the_lost_sell_counted(db_url: str) -> None:
    """150 booked, the LOST SELL of 60 ended 5 s ago (not settled yet), 50 moved out: the count shows 100."""
    _held_with_a_lost_sell(db_url, 5)
    _rows(db_url, "UPDATE positions SET size = 150, cost_usd = 60")
    pool = await create_pool(db_url, autocommit=True)
    try:
        await Reconciler(ReconcileStore(pool), Count(0), None, interval_s=300.0, known=_known).reconcile(WALLET)
        assert _rows(db_url, "SELECT size FROM positions") == [(D(100),)]
        assert await OrderStore(pool).sellable("w_1", ASSET) == D(40)
    finally:
        await pool.close()


async def test_a_correction_from_a_count_before_the_lost_sell_leaves_it_counted(db_url: str) -> None:
    """The correction of a count taken 20 s before the LOST, then an agreeing count inside the grace."""
    _held_with_a_lost_sell(db_url, 5)
    _rows(db_url, "UPDATE positions SET size = 150, cost_usd = 60")
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = OrderStore(pool)
        await Reconciler(ReconcileStore(pool), Count(20), None, interval_s=300.0, known=_known).reconcile(WALLET)
        assert await store.sellable("w_1", ASSET) == D(40)
        await Reconciler(ReconcileStore(pool), Count(0), None, interval_s=300.0, known=_known).reconcile(WALLET)
        assert await store.sellable("w_1", ASSET) == D(40)
    finally:
        await pool.close()


class Holds:
    """The venue's count, now: ``size`` shares."""

    def __init__(self, size: str) -> None:
        self.size = size

    async def positions(self, wallet_id: str) -> Answer:
        return Answer(200, {"asOf": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "positions": [
            {"tokenId": ASSET, "conditionId": CONDITION, "outcome": "Yes", "size": self.size, "avgPrice": "0.4",
             "redeemable": False}]})


async def test_one_correction_does_not_clear_two_lost_sells(db_url: str) -> None:
    """200 booked, two LOST SELLs of 60 (ended 5 and 4 s ago); the count shows 140: one sale settled, the other may
    not have. The SELLs may sell at most the 80 that can be left, never the 140 booked less one of them."""
    _held_with_a_lost_sell(db_url, 5)
    _rows(db_url, "UPDATE positions SET size = 200, cost_usd = 80")
    _rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id,"
                  " asset_id, side, order_type, size, order_proto, created_at, terminal_at) VALUES ('lost_2', 'LOST',"
                  f" 'INSIDERS', 'TRIGGER', 'sub_1', 'w_1', '{ASSET}', 'SELL', 'FAK', 60, '',"
                  " now() - interval '50 s', now() - interval '4 s')")
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = OrderStore(pool)
        await Reconciler(ReconcileStore(pool), Holds("140"), None, interval_s=300.0, known=_known).reconcile(WALLET)
        assert _rows(db_url, "SELECT size FROM positions") == [(D(140),)]
        assert await store.sellable("w_1", ASSET) <= D(80)
    finally:
        await pool.close()


async def test_a_round_that_leaves_a_lost_sell_counted_asks_for_a_later_one(db_url: str) -> None:
    _held_with_a_lost_sell(db_url, 5)
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), Count(0), None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
        assert "w_1" in rec._soon  # the count inside the grace did not show the sale
    finally:
        await pool.close()
