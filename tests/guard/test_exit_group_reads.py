"""The reads of one exits group's triggers whatever their state (is the group used up: the BUY fill's check under the
position's lock, and the SELL fill's peek) look that group up by key: ended triggers pile up in every other group
over time, and a read of all of them per fill grew with the whole history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from common.storage import KEYED_LOOKUPS
from services.guard.adapters.exit_fast_sql import SELL_PEEK
from services.guard.adapters.exit_group_writes import USED_UP_SQL
from tests.helpers import plan_nodes

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, tzinfo=UTC)
GROUP, WALLET_ID, ASSET = "grp_target", "w_target", "a_target"
OTHERS = 20_000  # ended and live triggers of other groups (two a group)


def _seed(conn: psycopg.Connection[Any]) -> None:
    columns = ("(id, wallet, follower_wallet_id, asset_id, kind, trigger_price, sell_fraction, price_source, state,"
               " source, oco_group, create_time, update_time)")
    conn.execute(
        f"INSERT INTO triggers {columns} SELECT 'trg_' || i, '0x' || repeat('ab', 20), 'w_' || (i / 2),"
        " 'a_' || (i / 2), 'TAKE_PROFIT', 0.9, 1, 'BEST_BID',"
        " (ARRAY['DONE', 'CANCELLED', 'FAILED', 'ARMED'])[1 + i %% 4], 'COPY', 'grp_' || (i / 2), %s, %s"
        " FROM generate_series(1, %s) AS i", (NOW, NOW, OTHERS))
    for tid, state in (("trg_target_tp", "DONE"), ("trg_target_sl", "CANCELLED")):
        conn.execute(f"INSERT INTO triggers {columns} VALUES (%s, '0x' || repeat('cd', 20), %s, %s, 'TAKE_PROFIT',"
                     " 0.9, 1, 'BEST_BID', %s, 'COPY', %s, %s, %s)", (tid, WALLET_ID, ASSET, state, GROUP, NOW, NOW))
    conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd)"
                 " VALUES (%s, %s, %s, '0x' || repeat('cd', 20), 10, 0.5, 5)", (WALLET_ID, ASSET, "0x" + "ef" * 32))
    conn.execute("INSERT INTO guard_position_exits (oco_group, follower_wallet_id, asset_id, wallet, subscription_id,"
                 " opening_order_id, entry_price, position_size, exits, state, created_at, updated_at) VALUES"
                 " (%s, %s, %s, '0x' || repeat('cd', 20), 'sub_1', 'co_1', 0.5, 10, %s, 'OPEN', %s, %s)",
                 (GROUP, WALLET_ID, ASSET, Jsonb({"planned": ["tp", "sl"]}), NOW, NOW))
    for table in ("triggers", "positions", "guard_position_exits"):
        conn.execute(f"ANALYZE {table}")


def _triggers_read(plan: dict[str, Any]) -> tuple[int, list[str]]:
    """(rows the plan's scans of triggers read and threw away, the index conditions they used)."""
    nodes = [n for n in plan_nodes(plan) if n.get("Relation Name") == "triggers"]
    removed = sum(int(n.get("Rows Removed by Filter", 0)) for n in nodes)
    return removed, [str(n.get("Index Cond", "")) for n in nodes]


@pytest.mark.parametrize(("name", "statement", "params"), [
    ("the BUY fill's used-up check", USED_UP_SQL, (GROUP,)),
    ("the SELL fill's peek", SELL_PEEK, {"a": ASSET, "w": WALLET_ID}),
])
def test_a_groups_triggers_are_read_by_key_however_long_the_history(db_url: str, name: str, statement: str,
                                                                    params: Any) -> None:
    with psycopg.connect(db_url, autocommit=True, options=KEYED_LOOKUPS, row_factory=dict_row) as conn:
        _seed(conn)
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).fetchone()
    assert row is not None
    removed, conditions = _triggers_read(row["QUERY PLAN"][0]["Plan"])
    assert removed < 100, f"{name}: read and dropped {removed} other triggers ({conditions})"


def test_the_used_up_check_still_counts_the_groups_own_triggers(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True, options=KEYED_LOOKUPS, row_factory=dict_row) as conn:
        _seed(conn)
        counts = conn.execute(USED_UP_SQL, (GROUP,)).fetchone()
        peek = conn.execute(SELL_PEEK, {"a": ASSET, "w": WALLET_ID}).fetchone()
    assert counts == {"live": 0, "closed": 1}
    assert peek is not None and peek["used_up"] is True and peek["armed"] == []
