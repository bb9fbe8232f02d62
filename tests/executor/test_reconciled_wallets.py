"""Which wallets reconciliation follows: every wallet copying LIVE, and every wallet holding a position at the
Insiders venue that is not ended (its subscriptions stopped, or a manual position only): the venue's count is the
truth for what can be sold, and a resolved market's winnings are found by it (real PostgreSQL)."""

from __future__ import annotations

import pytest

from common.storage import create_pool
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from tests.executor.test_reconcile_grace import _rows as rows

pytestmark = pytest.mark.integration


def _subscription(db_url: str, sub: str, wallet: str, state: str, mode: str) -> None:
    rows(db_url, "INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy, leader_proxy,"
                 " state, mode, sizing, filters, risk, exits, perf, create_time, update_time) VALUES"
                 f" ('{sub}', 'u_1', '{wallet}', '{_proxy(wallet)}', '0x{'f5' * 20}', '{state}', '{mode}', '{{}}',"
                 " '{}', '{}', '{}', '{}', now(), now())")


def _position(db_url: str, wallet: str, asset: str, state: str, venue: str, origin: str = "COPY") -> None:
    rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                 " cost_usd, id, state, origin, venue, updated_at, opened_at) VALUES"
                 f" ('{wallet}', '{asset}', '0x{'c1' * 32}', '{_proxy(wallet)}', 10, 0.4, 4, 'pos_{wallet}_{asset}',"
                 f" '{state}', '{origin}', '{venue}', now(), now())")


def _proxy(wallet: str) -> str:
    return "0x" + wallet.encode().hex().ljust(40, "0")[:40]


async def test_wallets_holding_insiders_positions_are_reconciled_whatever_their_subscriptions(db_url: str) -> None:
    _subscription(db_url, "sub_live", "w_live", "ACTIVE", "LIVE")
    _subscription(db_url, "sub_stopped", "w_stopped", "STOPPED", "LIVE")
    _position(db_url, "w_stopped", "1", "OPEN", "INSIDERS")
    _position(db_url, "w_manual", "2", "OPEN", "INSIDERS", origin="MANUAL")  # no subscription at all
    _position(db_url, "w_won", "3", "RESOLVED_WON", "INSIDERS")  # its winnings not redeemed yet
    _subscription(db_url, "sub_gone", "w_gone", "STOPPED", "LIVE")
    _position(db_url, "w_gone", "4", "CLOSED", "INSIDERS")
    _position(db_url, "w_paper", "5", "OPEN", "PAPER")
    _subscription(db_url, "sub_paper", "w_paper", "ACTIVE", "PAPER")
    pool = await create_pool(db_url, autocommit=True)
    try:
        wallets = await ReconcileStore(pool).live_wallets()
    finally:
        await pool.close()
    assert wallets == [LiveWallet(w, _proxy(w)) for w in ("w_live", "w_manual", "w_stopped", "w_won")]
