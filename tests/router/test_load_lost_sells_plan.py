"""The batch read looks a wallet's SELLs ended LOST up by its key (lost_sells_position) whatever lost_sells held when
the plan was made: a plan made on an empty table had walked the whole of lost_sells_pkey once per wallet, every note
in it read for each follower of a SELL."""

from __future__ import annotations

import psycopg
import pytest

from services.router.adapters.store_sql import PLANNER_OPTIONS
from tests.helpers import plan_nodes
from tests.router.load_plans import explain_load, load_params

pytestmark = pytest.mark.integration

WALLETS = 2000


def _note_lost(db_url: str, n: int, *, wallet: str = "x_", analyze: bool = False) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO lost_sells (client_order_id, follower_wallet_id, asset_id, terminal_at)"
                     " SELECT %s || g || md5(random()::text), %s || g, '111', now() - interval '2 hours'"
                     " FROM generate_series(1, %s) g", (wallet, wallet, n))
        if analyze:
            conn.execute("ANALYZE lost_sells")


@pytest.mark.parametrize("analyzed_with", [0, 1])
@pytest.mark.parametrize("generic", [True, False], ids=["generic plan", "custom plan"])
async def test_lost_sells_are_probed_by_wallet_once_the_table_grew_past_its_statistics(
        db_url: str, analyzed_with: int, generic: bool) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, cost_usd)"
                     f" SELECT 'w_' || g, '111', '0xa', 10, 4 FROM generate_series(1, {WALLETS}) g")
        conn.execute("ANALYZE positions")
    _note_lost(db_url, analyzed_with, wallet="old_", analyze=True)
    _note_lost(db_url, 49)  # fewer changes than autovacuum's threshold: the statistics stay as they were
    params = await load_params(wallets=[f"w_{g}" for g in range(1, WALLETS + 1)], markets=["0xc"], assets=["111"],
                               sell_assets=["111"])
    nodes = [n for n in plan_nodes(explain_load(db_url, params, PLANNER_OPTIONS, generic=generic))
             if n.get("Relation Name") == "lost_sells" or "lost_sells" in n.get("Index Name", "")]
    assert nodes and {n.get("Index Name") for n in nodes} == {"lost_sells_position"}
    assert sum(n["Actual Loops"] * (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) for n in nodes) == 0
