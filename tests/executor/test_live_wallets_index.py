"""Reconciliation lists its wallets once a minute (``reconcile_store._LIVE_WALLETS``): those copying LIVE and those
holding an Insiders position not ended. ``positions`` keeps every ended life's row for ever, and the second part read
all of them; it reads the rows not ended alone now, through ``positions_live_wallet`` (migration 0834), and lists the
same wallets (real PostgreSQL)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from services.executor.adapters import reconcile_store
from services.executor.adapters.order_store import PLANNER_OPTIONS
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from tests.helpers import plan_nodes

pytestmark = pytest.mark.integration

INDEX = "positions_live_wallet"


def _history(db_url: str, ended: int = 20_000, live: int = 300) -> None:
    """100 subscriptions (LIVE or PAPER, some STOPPED) of wallets w_0 .. w_99; ``ended`` positions that ended
    (closed, lost, redeemed; a tenth of them PAPER) of wallets w_0 .. w_499; ``live`` open or won positions (a fifth
    won, a tenth PAPER, some with a proxy not well-formed) of wallets w_0 .. w_399."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy,"
                     " leader_proxy, state, mode, sizing, filters, risk, exits, perf, create_time, update_time)"
                     " SELECT 'sub_' || g, 'u', 'w_' || g, '0x' || lpad(to_hex(g), 40, '0'),"
                     " '0x' || lpad(to_hex(g + 1000), 40, '0'), CASE WHEN g % 3 = 0 THEN 'STOPPED' ELSE 'ACTIVE' END,"
                     " CASE WHEN g % 2 = 0 THEN 'LIVE' ELSE 'PAPER' END, '{}', '{}', '{}', '{}', '{}', now(), now()"
                     " FROM generate_series(0, 99) g")
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, id, state, venue)"
                     " SELECT 'w_' || (g %% 500), 'e_' || g, '0x' || lpad(to_hex(g %% 500), 40, '0'), 0, 'pos_e' || g,"
                     " (ARRAY['CLOSED', 'RESOLVED_LOST', 'REDEEMED'])[1 + g %% 3],"
                     " CASE WHEN g %% 10 = 0 THEN 'PAPER' ELSE 'INSIDERS' END FROM generate_series(1, %s) g",
                     (ended,))
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, id, state, venue)"
                     " SELECT 'w_' || (g %% 400), 'o_' || g, CASE WHEN g %% 7 = 0 THEN 'not-a-proxy'"
                     " ELSE '0x' || lpad(to_hex(g %% 400), 40, '0') END, CASE WHEN g %% 5 = 0 THEN 0 ELSE 10 END,"
                     " 'pos_o' || g, CASE WHEN g %% 5 = 0 THEN 'RESOLVED_WON' ELSE 'OPEN' END,"
                     " CASE WHEN g %% 10 = 3 THEN 'PAPER' ELSE 'INSIDERS' END FROM generate_series(1, %s) g", (live,))
        conn.execute("ANALYZE")


def _scans(db_url: str, options: str) -> list[tuple[str, str]]:
    """(node type, index) of each scan of ``positions`` in the wallet list's plan, a bitmap heap scan's index its
    child's."""
    with psycopg.connect(db_url, autocommit=True, options=options) as conn:
        [[doc]] = conn.execute(("EXPLAIN (FORMAT JSON) " + reconcile_store._LIVE_WALLETS).encode()).fetchall()
    found = []
    for n in plan_nodes(doc[0]["Plan"]):
        if n.get("Relation Name") == "positions":
            below = [c.get("Index Name", "") for c in plan_nodes(n)[1:]]
            found.append((n["Node Type"], n.get("Index Name") or ",".join(below)))
    return found


def _listed(db_url: str, *, without_index: bool) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        if without_index:
            conn.execute(f"DROP INDEX {INDEX}")  # rolled back with the transaction
        listed = conn.execute(reconcile_store._LIVE_WALLETS.encode()).fetchall()
        conn.rollback()
    return listed


@pytest.mark.parametrize("options", ["", PLANNER_OPTIONS], ids=["default", "executor"])
def test_the_wallet_list_reads_the_positions_not_ended_through_their_index(db_url: str, options: str) -> None:
    _history(db_url)
    scans = _scans(db_url, options)
    assert scans and all(index == INDEX for _, index in scans), scans
    assert "Seq Scan" not in {node for node, _ in scans}, scans


async def test_the_wallet_list_is_the_same_through_the_index(db_url: str, pool: Any) -> None:
    _history(db_url)
    expected = _listed(db_url, without_index=True)
    assert _listed(db_url, without_index=False) == expected
    assert await ReconcileStore(pool).live_wallets() == [LiveWallet(w, p) for w, p in expected]
    assert len(expected) > 250  # wallets copying LIVE and those holding Insiders positions not ended
