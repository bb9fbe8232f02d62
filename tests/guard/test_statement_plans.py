"""Plans of guard's batch statements on a growing database: each row of a batch is looked up by its key, so the
cost follows the batch, not the tables (a join the planner may turn into every row against every row, or a scan
of the whole history, is what these tests fail on)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from common.storage import KEYED_LOOKUPS
from services.guard.adapters.exit_fast_sql import PEEK, REGISTER_EMPTY_MANY, RESIZE_OR_PEEK_MANY, SELL_PEEK
from services.guard.adapters.perf_store import _MANY
from tests.guard.standins import ASSET
from tests.helpers import generic_plan_scans, plan_nodes, plan_scans

pytestmark = pytest.mark.integration


def test_resizing_a_batch_looks_each_group_up_instead_of_comparing_every_pair(db_url: str) -> None:
    insert = ("INSERT INTO guard_position_exits (oco_group, follower_wallet_id, asset_id, wallet, subscription_id,"
              " opening_order_id, entry_price, position_size, exits, state, created_at, updated_at)"
              " SELECT 'g_' || i, 'w_' || i, 'a_1', '0x' || i, 'sub_' || i, 'co_' || i, 0.5, 10, '{}', 'OPEN', now(),"
              " now() FROM generate_series(%s::int, %s::int) AS i")
    with psycopg.connect(db_url, autocommit=True) as conn:  # statistics from when there were 2 open groups, now 500
        conn.execute(insert, (1, 2))
        conn.execute("ANALYZE guard_position_exits")
        conn.execute(insert, (3, 500))
        rows = json.dumps([{"i": i, "w": f"w_{i}", "a": "a_1", "filled": "12", "sub": f"sub_{i}"}
                           for i in range(1, 501)])
        conn.execute("BEGIN")
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + RESIZE_OR_PEEK_MANY,
                            {"rows": rows, "now": datetime.now(UTC)}).fetchone()
        resized = conn.execute("SELECT count(*) FROM guard_position_exits WHERE position_size = 12").fetchone()
        conn.execute("ROLLBACK")
    assert plan is not None and resized == (500,)
    nodes = plan_nodes(plan[0][0]["Plan"])
    # joined directly, the planner could (and under a bench's statistics did) compare each fill of the batch with
    # each open group: 1,000 fills over 1,000 groups, a million comparisons, 0.2 s
    assert sum(n.get("Rows Removed by Join Filter", 0) for n in nodes) < 5_000, nodes
    [update] = [n for n in nodes if n["Node Type"] == "ModifyTable"]
    below = plan_nodes(update)[1:]
    # the update finds its rows by key (an index, or a scan on a table this small), with no join to plan
    assert not any(n["Node Type"] in ("Nested Loop", "Hash Join", "Merge Join") for n in below), below


def test_a_later_read_looks_up_each_subscription_instead_of_reading_every_fill(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:  # 200 subscriptions with 50 fills each
        conn.execute(
            "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size, price,"
            " notional_usd, venue, fill_time) SELECT 'f_' || i, 'sub_' || (i %% 200), 'w_' || (i %% 200), 'co_' || i,"
            " %s, 'BUY', 10, 0.5, 5, 'PAPER', now() FROM generate_series(1, 10000) AS i", (ASSET,))
        conn.execute("ANALYZE fills")
        row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert row is not None
        sids = [f"sub_{i}" for i in range(200)]
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + _MANY,
                            {"first": [], "again": sids, "seen": [row[0]] * len(sids)}).fetchone()
    assert plan is not None
    scans = plan_scans(plan[0][0]["Plan"], "fills")
    # flattened into a join, the later read scanned (and sorted) every fill ever booked at every pass
    assert scans and "Seq Scan" not in scans, scans
    later = [n for n in plan_nodes(plan[0][0]["Plan"]) if "xact" in str(n.get("Index Cond", ""))]
    assert later, "the xmin bound is not an index condition"


_FILLS = ("INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size, price,"
          " notional_usd, venue, fill_time) SELECT %s || i, %s || (i %% %s), 'w_' || (i %% %s), %s || i, %s, 'BUY',"
          " 10, 0.5, 5, 'PAPER', now() FROM generate_series(1, %s) AS i")


def _fills_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in plan_nodes(plan) if n.get("Relation Name") == "fills"]


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("read", ["first", "later"])
def test_a_read_looks_up_each_subscription_when_the_statistics_saw_one(db_url: str, generic: bool,
                                                                      read: str) -> None:
    """Statistics taken while one subscription held every fill (one follower copying 13,000 trades), then 25
    subscriptions with 20 fills each: a read of them looks each one up by its key. Flattened into a join, the
    planner believed every fill matched every subscription and walked the whole table once for all of them,
    comparing each fill with each subscription asked for (0.1-0.27 s a statement on a bench's 50,000 fills)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(_FILLS, ("fb_", "sub_big", 1, 1, "cob_", ASSET, 13000))
        conn.execute("ANALYZE fills")
        snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert snapshot is not None
        conn.execute(_FILLS, ("fs_", "sub_", 25, 25, "cos_", ASSET, 500))
    sids = [f"sub_{i}" for i in range(25)]
    params = ({"first": sids, "again": [], "seen": []} if read == "first"
              else {"first": [], "again": sids, "seen": [snapshot[0]] * len(sids)})
    with psycopg.connect(db_url, autocommit=True, options=KEYED_LOOKUPS) as conn:  # guard's settings
        if generic:
            conn.execute("SET plan_cache_mode = force_generic_plan")
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _MANY, params).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    scans = _fills_scans(plan)
    assert scans, plan_nodes(plan)
    assert all("subscription_id" in str(n.get("Index Cond", "")) + str(n.get("Recheck Cond", "")) for n in scans), scans
    visited = sum(n["Actual Rows"] * n["Actual Loops"] for n in scans)
    assert visited <= 500, f"{visited} fills visited for 500 asked for"


_NOW = datetime.now(UTC)
_ONE_FILL = json.dumps([{"i": 0, "w": "w_1", "a": "a_1", "filled": "12", "sub": "sub_1"}])
# guard's statements that reach copy exits by wallet and asset, with parameters of the shape they are given
BY_KEY = {
    "resize or peek a batch": (RESIZE_OR_PEEK_MANY, {"rows": _ONE_FILL, "now": _NOW}),
    "register a batch of empty groups": (
        REGISTER_EMPTY_MANY, (_NOW, _NOW, ["g_1"], ["w_1"], ["a_1"], ["0xa"], ["sub_1"], ["co_1"], [Decimal("0.5")],
                              [Decimal(1)], [Decimal(1)], [Jsonb({})])),
    "peek before a SELL": (SELL_PEEK, {"w": "w_1", "a": "a_1"}),
    "peek at a fill": (PEEK, {"sub": "sub_1", "w": "w_1", "a": "a_1"}),
}


@pytest.mark.parametrize("name", sorted(BY_KEY))
def test_a_plan_cached_on_an_empty_table_still_reaches_copy_exits_by_key(db_url: str, name: str) -> None:
    sql, params = BY_KEY[name]
    with psycopg.connect(db_url, autocommit=True) as conn:  # statistics that saw no row: what a fresh start caches
        conn.execute("ANALYZE guard_position_exits")
    scans = generic_plan_scans(db_url, sql, params, ["guard_position_exits"], options=KEYED_LOOKUPS)
    assert scans["guard_position_exits"] and "Seq Scan" not in scans["guard_position_exits"], scans


def test_without_guards_settings_that_plan_scans_every_group_for_each_fill(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE guard_position_exits")
    sql, params = BY_KEY["resize or peek a batch"]
    assert "Seq Scan" in generic_plan_scans(db_url, sql, params, ["guard_position_exits"])["guard_position_exits"]
