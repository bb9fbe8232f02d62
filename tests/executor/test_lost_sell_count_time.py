"""A SELL ended LOST counts as selling until the venue's count was taken after it: a count the venue took before the
LOST's end (a lagging snapshot, its ``asOf`` old) may lack the sale, however late the round that read it ran; and a
round that ran ahead of a wallet's wake leaves every wake asked for after it, not only the earliest."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.adapters.reconcile_store import ReconcileStore
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler
from tests.executor.test_reconcile_grace import (
    ASSET,
    CONDITION,
    WALLET,
    CountingVenue,
    _known,
    _live_subscription,
    _rows,
)
from tests.helpers import eventually

pytestmark = pytest.mark.integration


def _held_with_a_lost_sell(db_url: str, ended_s: float) -> None:
    """100 shares booked two minutes ago, and a LIVE SELL of 60 of them that ended LOST ``ended_s`` ago."""
    _rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                  " cost_usd, id, state, origin, subscription_id, venue, updated_at, opened_at) VALUES"
                  f" ('w_1', '{ASSET}', '{CONDITION}', '{WALLET.wallet}', 100, 0.4, 40, 'pos_1', 'OPEN', 'COPY',"
                  " 'sub_1', 'INSIDERS', now() - interval '120 s', now() - interval '120 s')")
    _rows(db_url, "INSERT INTO orders (client_order_id, state, venue, origin, subscription_id, follower_wallet_id,"
                  " asset_id, side, order_type, size, order_proto, created_at, terminal_at) VALUES ('lost_1', 'LOST',"
                  f" 'INSIDERS', 'TRIGGER', 'sub_1', 'w_1', '{ASSET}', 'SELL', 'FAK', 60, '',"
                  f" now() - interval '60 s', now() - make_interval(secs => {ended_s}))")


class Count:
    """The venue's count of 100 shares of ASSET, taken ``age_s`` ago by its ``asOf``."""

    def __init__(self, age_s: float) -> None:
        self.age_s = age_s

    async def positions(self, wallet_id: str) -> Answer:
        as_of = (datetime.now(UTC) - timedelta(seconds=self.age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Answer(200, {"asOf": as_of, "positions": [
            {"tokenId": ASSET, "conditionId": CONDITION, "outcome": "Yes", "size": "100", "avgPrice": "0.4",
             "redeemable": False}]})


@pytest.mark.parametrize(("count_age_s", "sellable"), [
    (60, D(40)),  # taken before the LOST's end (30 s ago): it may lack the sale
    (0, D(100)),  # taken 30 s after it: the sale would be in it
])
async def test_a_lost_sell_counts_until_the_venue_took_its_count_after_it(
        db_url: str, count_age_s: float, sellable: D) -> None:
    _held_with_a_lost_sell(db_url, 30)
    pool = await create_pool(db_url, autocommit=True)
    try:
        store = OrderStore(pool)
        assert await store.sellable("w_1", ASSET) == D(40)
        rec = Reconciler(ReconcileStore(pool), Count(count_age_s), None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
        assert _rows(db_url, "SELECT size, venue_shares FROM positions") == [(D(100), D(100))]
        assert await store.sellable("w_1", ASSET) == sellable
    finally:
        await pool.close()


async def test_a_correction_from_a_count_taken_before_a_lost_sell_ended_does_not_clear_it(db_url: str) -> None:
    """150 booked, 100 at the venue by a count taken before the LOST's end: the correction books the 50 sold outside
    the engine, not the LOST SELL's 60, which the count lacks."""
    _held_with_a_lost_sell(db_url, 30)
    _rows(db_url, "UPDATE positions SET size = 150, cost_usd = 60")
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), Count(60), None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
        assert _rows(db_url, "SELECT size FROM positions") == [(D(100),)]
        assert _rows(db_url, "SELECT side, size FROM fills WHERE order_id = 'reconcile_pos_1'") == [("SELL", D(50))]
        assert await OrderStore(pool).sellable("w_1", ASSET) == D(40)
    finally:
        await pool.close()


async def test_a_wake_asked_for_after_an_earlier_one_of_the_wallet_is_kept(db_url: str) -> None:
    """An order of the wallet ended UNKNOWN (a wake in 0.3 s), then a SELL ended LOST (a wake in 1.5 s): the round the
    first wake makes comes before the LOST's grace is over, and the LOST's wake still makes one after it."""
    _live_subscription(db_url)
    pool = await create_pool(db_url, autocommit=True)
    venue = CountingVenue()
    rec = Reconciler(ReconcileStore(pool), venue, None, interval_s=300.0, known=_known)
    task = asyncio.create_task(rec.run())
    try:
        await eventually(lambda: venue.calls >= 1)  # the start's round
        rec.soon("w_1", 0.3)
        rec.soon("w_1", 1.5)
        await eventually(lambda: venue.calls >= 2, timeout_s=3.0)
        await asyncio.sleep(0.5)  # the round of the first wake is over; the LOST's wake is not due yet
        assert venue.calls == 2
        await eventually(lambda: venue.calls >= 3, timeout_s=5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()
