"""Which assets are still held (the watch set's repair every ~30 s, and the check of a list of assets) reads the
positions held, by index: ``positions`` keeps every life a wallet ended, and reading those too grew with the
history (100,000 rows for 3,000 held in the review's data, 62 ms each repair)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from services.executor.adapters import order_store
from tests.helpers import ENDED_STATE_SQL, rows_read

pytestmark = pytest.mark.integration

ENDED, HELD = 20_000, 10


def _seed(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, state)"
                     " SELECT 'w_' || g, 'a_' || (g %% 200), '0xa', 0, " + ENDED_STATE_SQL.format(n="g")
                     + " FROM generate_series(1, %s) g",
                     (ENDED,))
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, state)"
                     " SELECT 'held_' || g, 'a_' || g, '0xa', 5, 'OPEN' FROM generate_series(1, %s) g", (HELD,))
        conn.execute("ANALYZE positions")


@pytest.mark.parametrize(("name", "statement", "params", "held"), [
    ("every asset held", order_store.HELD_ASSETS, None, {f"a_{g}" for g in range(1, HELD + 1)}),
    ("among a list", order_store.HELD_AMONG, (["a_1", "a_150", "a_199"],), {"a_1"}),
])
def test_only_the_positions_held_are_read(db_url: str, name: str, statement: str, params: Any,
                                          held: set[str]) -> None:
    _seed(db_url)
    with psycopg.connect(db_url, autocommit=True, options=order_store.PLANNER_OPTIONS, row_factory=dict_row) as conn:
        assert {r["asset_id"] for r in conn.execute(statement, params).fetchall()} == held
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).fetchone()
    assert row is not None
    read = rows_read(row["QUERY PLAN"][0]["Plan"], "positions")
    assert read <= 2 * HELD, f"{name}: {read} positions read for {HELD} held"
