"""The proxy address reconciliation writes on the positions it opens (EXTERNAL) and redeems from is the wallet's own,
its LIVE subscription's, whatever its positions carry: an order stored without its proxy ("") or under an address
spelled otherwise opened them with that value. A wallet followed for its positions alone (its subscriptions stopped)
takes its subscriptions' proxy too (real PostgreSQL)."""

from __future__ import annotations

import pytest

from common.storage import create_pool
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from tests.executor.test_reconcile_grace import _rows as rows
from tests.executor.test_reconciled_wallets import _proxy, _subscription

pytestmark = pytest.mark.integration


def _position(db_url: str, wallet: str, asset: str, proxy: str) -> None:
    rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                 " cost_usd, id, state, origin, venue, updated_at, opened_at) VALUES"
                 f" ('{wallet}', '{asset}', '0x{'c1' * 32}', '{proxy}', 10, 0.4, 4, 'pos_{wallet}_{asset}',"
                 " 'OPEN', 'COPY', 'INSIDERS', now(), now())")


async def test_a_followed_wallet_keeps_its_subscriptions_proxy_whatever_its_positions_carry(db_url: str) -> None:
    _subscription(db_url, "sub_live", "w_live", "ACTIVE", "LIVE")
    _position(db_url, "w_live", "1", "")  # an order stored without its proxy
    _position(db_url, "w_live", "2", "0x" + "0" * 40)  # under another address, one that sorts first
    _subscription(db_url, "sub_stopped", "w_stopped", "STOPPED", "LIVE")
    _position(db_url, "w_stopped", "3", "")
    pool = await create_pool(db_url, autocommit=True)
    try:
        wallets = await ReconcileStore(pool).live_wallets()
    finally:
        await pool.close()
    assert wallets == [LiveWallet("w_live", _proxy("w_live")), LiveWallet("w_stopped", _proxy("w_stopped"))]


async def test_a_wallet_followed_for_its_positions_alone_takes_a_proxy_they_carry(db_url: str) -> None:
    _position(db_url, "w_manual", "1", "")
    _position(db_url, "w_manual", "2", _proxy("w_manual"))
    pool = await create_pool(db_url, autocommit=True)
    try:
        wallets = await ReconcileStore(pool).live_wallets()
    finally:
        await pool.close()
    assert wallets == [LiveWallet("w_manual", _proxy("w_manual"))]
