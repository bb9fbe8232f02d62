"""The previous life of a position (``exit_fast_sql.ended_life``: is an ARMED trigger an ended life's, asked on
every SELL fill's peek of a position with triggers) is looked up by the position's key: found through the wallet's
whole history, it walked every life the wallet closed since, in any token, which grows as the wallet trades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from common.storage import KEYED_LOOKUPS
from services.guard.adapters.exit_fast_sql import SELL_PEEK
from tests.helpers import rows_read

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, tzinfo=UTC)
WALLET, WALLET_ID, ASSET = "0x" + "cd" * 20, "w_1", "a_target"
OTHER_LIVES = 3_000


def _seed(conn: psycopg.Connection[dict[str, object]]) -> None:
    history = ("INSERT INTO position_history (id, follower_wallet_id, asset_id, wallet, state, origin, venue, size,"
               " avg_price, cost_usd, realized_pnl_usd, opened_at, closed_at, updated_at)")
    # the target's previous life, closed long ago; then the wallet's lives in other tokens since
    conn.execute(history + " VALUES ('ph_target', %s, %s, %s, 'CLOSED', 'COPY', 'PAPER', 0, 0.5, 0, 0, %s, %s, %s)",
                 (WALLET_ID, ASSET, WALLET, NOW - timedelta(days=30), NOW - timedelta(days=29), NOW))
    conn.execute(history + " SELECT 'ph_' || i, %s, 'a_' || i, %s, 'CLOSED', 'COPY', 'PAPER', 0, 0.5, 0, 0,"
                 " %s + i * interval '1 minute', %s + i * interval '1 minute' + interval '30 second', %s"
                 " FROM generate_series(1, %s) AS i",
                 (WALLET_ID, WALLET, NOW - timedelta(days=20), NOW - timedelta(days=20), NOW, OTHER_LIVES))
    conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
                 " opened_at) VALUES (%s, %s, %s, %s, 10, 0.5, 5, %s)",
                 (WALLET_ID, ASSET, "0x" + "ef" * 32, WALLET, NOW))
    conn.execute("INSERT INTO triggers (id, wallet, follower_wallet_id, asset_id, kind, trigger_price, sell_fraction,"
                 " price_source, state, source, create_time, update_time) VALUES ('trg_1', %s, %s, %s, 'STOP_LOSS',"
                 " 0.4, 1, 'BEST_BID', 'ARMED', 'MANUAL', %s, %s)", (WALLET, WALLET_ID, ASSET, NOW, NOW))
    for table in ("position_history", "positions", "triggers"):
        conn.execute(f"ANALYZE {table}")


def test_the_previous_life_is_found_without_walking_the_wallets_other_lives(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True, options=KEYED_LOOKUPS, row_factory=dict_row) as conn:
        _seed(conn)
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + SELL_PEEK, {"a": ASSET, "w": WALLET_ID}).fetchone()
        peek = conn.execute(SELL_PEEK, {"a": ASSET, "w": WALLET_ID}).fetchone()
    assert row is not None and peek is not None
    assert peek["has_armed"] is True and peek["ended_life"] is False  # set now, in the life open now
    walked = rows_read(row["QUERY PLAN"][0]["Plan"], "position_history")
    assert 0 < walked < 20, f"{walked} lives read to find one"
