"""Reconciliation takes a wallet's positions, then its subscriptions' stats, each in key order, as fill booking and
settlement take them, so none of them deadlocks with it.

It locked the positions statement by statement (its corrections, the new EXTERNAL lives, the count of those that
agree) and the stats in the order its corrections moved them: a correction of a wallet's Yes token and the count of
its No token met a settlement of that market the other way round, and stats moved sub_b then sub_a met a booking of
both, each deadlocking (40P01): PostgreSQL aborted one after a second's wait (a reconciliation round fails and its
wallet is asked again; the journal retries its batch; the settlement handler is retried). Each race is held at a
chosen point by a third transaction holding a row.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.reconcile import AtVenue, Correction
from services.executor.domain.settlement import Resolution
from tests.executor.conftest import ASSET, CONDITION, rows
from tests.executor.test_lock_order_stats import NO, _book_on, _buy, _connect, executor_pool
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration
__all__ = ["executor_pool"]

X, Y, V, Z, Q = "4" * 77, "5" * 77, "6" * 77, "7" * 77, "8" * 77
W = LiveWallet("w_1", "0x" + "1" * 40)


def _cut(asset: str) -> Correction:
    """10 booked shares (cost 5) counted 6 at the venue."""
    return Correction(asset, "CORRECTED", D(10), D(6), D("0.5"), D(5), D(3))


async def _reconcile(pool: AsyncConnectionPool[Any], fixes: list[Correction], seen: list[str]) -> None:
    store = ReconcileStore(pool)
    view = await store.view(W.follower_wallet_id, 0.0)
    await store.apply(W, fixes, [AtVenue(a, "", "Yes", D(10), D("0.5"), False) for a in seen], view.subscriptions)


async def test_a_reconciliation_takes_its_subscriptions_stats_in_key_order(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    # w_1 holds Y for sub_b and V for sub_a: the corrections move sub_b, then sub_a
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_1", "sub_b", Y), _buy("w_1", "sub_a", V), _buy("w_1", "sub_ab", Z)])

    async def booking() -> None:  # held at sub_ab with sub_a taken
        async with await _connect(db_url) as conn:
            await _book_on(conn, [_buy("w_1", "sub_a", X), _buy("w_1", "sub_ab", Z), _buy("w_1", "sub_b", Q)])

    gate = "SELECT 1 FROM subscription_stats WHERE subscription_id = 'sub_ab' FOR UPDATE"
    outcome = await race_at_gate(db_url, gate, booking, lambda: _reconcile(executor_pool, [_cut(Y), _cut(V)], []))
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT subscription_id, copied, exposure_usd FROM subscription_stats ORDER BY 1") == [
        ("sub_a", 2, D(8)), ("sub_ab", 2, D(10)), ("sub_b", 2, D(8))]


async def test_a_reconciliation_takes_its_wallets_positions_in_key_order(
        db_url: str, executor_pool: AsyncConnectionPool[Any]) -> None:
    # w_1 holds both tokens of the market (NO sorts first), w_0 holds ASSET: the settlement locks w_0's, then
    # w_1's NO, then w_1's ASSET; the reconciliation corrects ASSET, then counts NO
    async with await _connect(db_url) as conn:
        await _book_on(conn, [_buy("w_0", "sub_0", ASSET), _buy("w_1", "sub_a", ASSET), _buy("w_1", "sub_a", NO)])
    settlement = SettlementStore(executor_pool)

    gate = f"SELECT 1 FROM positions WHERE follower_wallet_id = 'w_1' AND asset_id = '{NO}' FOR UPDATE"
    outcome = await race_at_gate(db_url, gate, lambda: settlement.settle(Resolution(CONDITION, (ASSET, NO), ASSET)),
                                 lambda: _reconcile(executor_pool, [_cut(ASSET)], [NO]))
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT follower_wallet_id, asset_id, state, size FROM positions ORDER BY 1, 2") == [
        ("w_0", ASSET, "RESOLVED_WON", D(0)), ("w_1", NO, "RESOLVED_LOST", D(0)),
        ("w_1", ASSET, "RESOLVED_WON", D(0))]
