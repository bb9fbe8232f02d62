"""A confirmed redemption finds the wallet's winning positions in its market by key: a wallet keeps every position it
ever held, and reading them all for each confirmed market grew with its history."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from psycopg.rows import dict_row

from services.executor.adapters import order_store, redemption_store
from tests.helpers import ENDED_STATE_SQL, rows_read

pytestmark = pytest.mark.integration

ENDED = 300
MARKET = "0x" + "ab" * 32


def test_the_winning_position_is_found_without_reading_the_wallets_others(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, state)"
                     " SELECT 'w_1', 'a_' || g, '0x' || lpad(g::text, 64, '0'), '0xa', 0, "
                     + ENDED_STATE_SQL.format(n="g") + " FROM generate_series(1, %s) g",
                     (ENDED,))
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, state)"
                     " VALUES ('w_1', 'a_won', %s, '0xa', 0, 'RESOLVED_WON')", (MARKET,))
        conn.execute("ANALYZE positions")
    params = (orjson.dumps([{"w": "w_1", "c": MARKET}]).decode(),)
    with psycopg.connect(db_url, options=order_store.PLANNER_OPTIONS, row_factory=dict_row) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + redemption_store._REDEEMED, params).fetchone()
        redeemed = conn.execute("SELECT asset_id FROM positions WHERE state = 'REDEEMED' AND condition_id = %s",
                                (MARKET,)).fetchall()
        conn.rollback()
    assert row is not None and redeemed == [{"asset_id": "a_won"}]
    read = rows_read(row["QUERY PLAN"][0]["Plan"], "positions")
    assert 0 < read <= 2, f"{read} positions read for the one won"
