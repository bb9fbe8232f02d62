"""A SELL that ended LOST may have sold: when its market resolves before a reconciliation compared its position, the
position is settled from the venue's count taken after the SELL, not from the shares booked. Settlement holds the
position back while the LOST SELL counts as selling (at most its 15-minute window); reconciliation compares the
resolved token (the venue lists it redeemable) for it, and the settlement that follows realizes and redeems what the
wallet still holds (real PostgreSQL).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.adapters.reconcile_store import ReconcileStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.reconcile import CORRECTED, AtVenue, Booked, reconcile
from services.executor.domain.settlement import Resolution
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler
from services.executor.settling import Settler
from tests.executor.test_lost_sell_count_time import _held_with_a_lost_sell
from tests.executor.test_reconcile_grace import ASSET, CONDITION, WALLET, _known, _rows

pytestmark = pytest.mark.integration

NO = "8" * 77


class Redeemable:
    """The venue's count of ASSET after the market resolved: ``size`` shares, redeemable, taken ``age_s`` ago."""

    def __init__(self, size: str, age_s: float = 0) -> None:
        self.size = size
        self.age_s = age_s

    async def positions(self, wallet_id: str) -> Answer:
        as_of = (datetime.now(UTC) - timedelta(seconds=self.age_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = [{"tokenId": ASSET, "conditionId": CONDITION, "outcome": "Yes", "size": self.size, "avgPrice": "0.4",
                 "redeemable": True, "asOf": as_of}] if self.size != "0" else []
        return Answer(200, {"asOf": as_of, "positions": rows})


def test_a_resolved_token_with_a_lost_sell_is_compared_with_its_redeemable_count() -> None:
    booked = [Booked(ASSET, "OPEN", D(100), D("0.4"), D(40))]
    venue = [AtVenue(ASSET, CONDITION, "Yes", D(40), D("0.4"), True)]
    assert reconcile(booked, venue, (), {ASSET}) == []
    [fix] = reconcile(booked, venue, (), {ASSET}, {ASSET})
    assert (fix.kind, fix.size_after, fix.cost_after) == (CORRECTED, D(40), D(16))
    assert reconcile(booked, venue, {ASSET}, {ASSET}, {ASSET}) == []  # busy: an order in flight


def _resolved(db_url: str, neg_risk: bool = False) -> Resolution:
    """ASSET's market resolved (YES won), as ingest records it."""
    _rows(db_url, "INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                  f" payload, neg_risk) VALUES ('{CONDITION}', ARRAY['{ASSET}', '{NO}'], '{ASSET}', 'CLOB_SOCKET',"
                  f" now(), '', {neg_risk})")
    return Resolution(CONDITION, (ASSET, NO), ASSET, neg_risk)


def _settled(db_url: str) -> list[tuple[Any, ...]]:
    return _rows(db_url, "SELECT state, size, resolved_shares, realized_pnl_usd FROM positions")


def _redemptions(db_url: str) -> list[tuple[Any, ...]]:
    return _rows(db_url, "SELECT shares, amounts FROM redemptions")


@pytest.mark.parametrize("neg_risk", [False, True])
async def test_a_resolved_position_with_a_lost_sell_that_sold_is_settled_on_the_venues_count(
        db_url: str, neg_risk: bool) -> None:
    """100 booked at $0.40, a LOST SELL of 60 that did sell (the venue holds 40), then YES wins."""
    _held_with_a_lost_sell(db_url, 30)
    resolution = _resolved(db_url, neg_risk)
    pool = await create_pool(db_url, autocommit=True)
    try:
        settler = Settler(SettlementStore(pool))
        await settler.settle(resolution)  # the resolution streamed: before any reconciliation
        await Reconciler(ReconcileStore(pool), Redeemable("40"), None, interval_s=300.0,
                         known=_known).reconcile(WALLET)
        await settler.sweep()
    finally:
        await pool.close()
    # 40 shares paid $40 for their $16 of cost; the 60 sold left at their cost (the sale's price is not known)
    assert _settled(db_url) == [("RESOLVED_WON", D(0), D(40), D(24))]
    assert _redemptions(db_url) == [(D(40), ["40", "0"] if neg_risk else [])]


async def test_a_resolved_position_with_a_lost_sell_that_did_not_sell_is_settled_once_compared(db_url: str) -> None:
    _held_with_a_lost_sell(db_url, 30)
    resolution = _resolved(db_url)
    pool = await create_pool(db_url, autocommit=True)
    try:
        settler = Settler(SettlementStore(pool))
        result = await settler.settle(resolution)
        assert (result.settled, result.held) == ([], [("w_1", ASSET)])
        assert await settler.sweep() == 0
        rec = Reconciler(ReconcileStore(pool), Redeemable("100"), None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
        assert rec.stats.corrections == {}
        assert "w_1" not in rec._soon  # the count was taken after the LOST SELL's grace: nothing more to read
        assert await settler.sweep() == 1
    finally:
        await pool.close()
    assert _settled(db_url) == [("RESOLVED_WON", D(0), D(100), D(60))]
    assert _redemptions(db_url) == [(D(100), [])]


async def test_a_count_inside_the_lost_sells_grace_keeps_the_resolved_position_held(db_url: str) -> None:
    _held_with_a_lost_sell(db_url, 5)
    resolution = _resolved(db_url)
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), Redeemable("100"), None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
        assert "w_1" in rec._soon  # a later count is asked for
        assert (await Settler(SettlementStore(pool)).settle(resolution)).settled == []
        assert await OrderStore(pool).sellable("w_1", ASSET) == D(40)
    finally:
        await pool.close()
    assert _settled(db_url) == [("OPEN", D(100), None, D(0))]


async def test_a_lost_sell_past_its_window_no_longer_holds_the_settlement(db_url: str) -> None:
    _held_with_a_lost_sell(db_url, 901)
    resolution = _resolved(db_url)
    pool = await create_pool(db_url, autocommit=True)
    try:
        assert len((await Settler(SettlementStore(pool)).settle(resolution)).settled) == 1
    finally:
        await pool.close()
    assert _settled(db_url) == [("RESOLVED_WON", D(0), D(100), D(60))]


async def test_a_lost_sell_that_sold_everything_closes_the_resolved_position_without_a_redemption(
        db_url: str) -> None:
    _held_with_a_lost_sell(db_url, 30)
    _rows(db_url, "UPDATE orders SET size = 100")
    resolution = _resolved(db_url)
    pool = await create_pool(db_url, autocommit=True)
    try:
        settler = Settler(SettlementStore(pool))
        await settler.settle(resolution)
        await Reconciler(ReconcileStore(pool), Redeemable("0"), None, interval_s=300.0,
                         known=_known).reconcile(WALLET)
        assert await settler.sweep() == 0
    finally:
        await pool.close()
    assert _rows(db_url, "SELECT state, size, realized_pnl_usd FROM positions") == [("CLOSED", D(0), D(0))]
    assert _redemptions(db_url) == []


async def test_a_lost_sell_of_a_market_whose_redemption_is_recorded_leaves_it_to_the_settlement(db_url: str) -> None:
    """An earlier life of the token was settled and its redemption recorded: the count may lack what it took, so it
    is not compared, and the settlement does not wait for it."""
    _held_with_a_lost_sell(db_url, 30)
    resolution = _resolved(db_url)
    _rows(db_url, "INSERT INTO redemptions (follower_wallet_id, condition_id, wallet, redemption_key, state, shares)"
                  f" VALUES ('w_1', '{CONDITION}', '{WALLET.wallet}', 'rk_1', 'CONFIRMED', 50)")
    pool = await create_pool(db_url, autocommit=True)
    try:
        rec = Reconciler(ReconcileStore(pool), Redeemable("40"), None, interval_s=300.0, known=_known)
        await rec.reconcile(WALLET)
        assert rec.stats.corrections == {}
        assert len((await Settler(SettlementStore(pool)).settle(resolution)).settled) == 1
    finally:
        await pool.close()
    assert _settled(db_url) == [("RESOLVED_WON", D(0), D(100), D(60))]
