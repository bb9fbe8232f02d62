"""The executor's journal statements reach orders and positions by key whatever the planner thinks of
the tables' sizes (a fresh database's plans are the ones its connections keep)."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest

from services.executor.adapters import (
    fill_store,
    order_sql,
    order_store,
    reconcile_store,
    redemption_store,
    settlement_store,
)
from tests.helpers import generic_plan_scans, plan_nodes, plan_scans

pytestmark = pytest.mark.integration

STATEMENTS = {
    "order updates": (order_sql.UPDATE_ORDERS, (orjson.dumps([{"coid": "co_1", "state": "PLACED"}]).decode(),),
                      "orders"),
    "order updates, pending": (order_sql.UPDATE_ORDERS,
                               (orjson.dumps([{"coid": "co_1", "state": "FILLED", "terminal": True}]).decode(),),
                               "order_pending"),
    "position updates": (fill_store._UPDATE_FEW_POSITIONS_AND_STATS,
                         ("[]", orjson.dumps([{"w": "w_1", "a": "111", "size": "1"}]).decode()), "positions"),
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_journal_writes_look_rows_up_by_key_on_an_empty_table(db_url: str, name: str) -> None:
    sql, params, table = STATEMENTS[name]
    scans = generic_plan_scans(db_url, sql, params, [table], options=order_store.PLANNER_OPTIONS)[table]
    # (a position update also reads a reopened one's old life)
    assert scans and set(scans) <= {"Index Scan", "Bitmap Heap Scan"}, scans


def test_without_the_executor_settings_the_same_plan_reads_the_whole_table(db_url: str) -> None:
    sql, params, table = STATEMENTS["order updates"]
    assert generic_plan_scans(db_url, sql, params, [table])[table] == ["Seq Scan"]


def test_whether_an_asset_is_still_held_is_one_index_probe(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " SELECT 'w_' || g, 'a_' || (g % 500), '0xa', g % 3 FROM generate_series(1, 5000) g")
        conn.execute("ANALYZE positions")
        row = conn.execute("EXPLAIN (FORMAT JSON) " + order_store.HELD_AMONG, (["a_7"],)).fetchone()
    assert row is not None
    assert plan_scans(row[0][0]["Plan"], "positions") in (["Index Scan"], ["Index Only Scan"], ["Bitmap Heap Scan"])


def _index_names(plan: dict[str, Any]) -> set[str]:
    return ({plan["Index Name"]} if "Index Name" in plan else set()).union(
        *(_index_names(child) for child in plan.get("Plans", [])))


def test_marking_events_appended_deletes_them_from_the_outbox_by_key(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO order_events_outbox (event_id, seq)"
                     " SELECT 'oev_' || g, g FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE order_events_outbox")
    with psycopg.connect(db_url, options=order_store.PLANNER_OPTIONS) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        row = conn.execute("EXPLAIN (FORMAT JSON) " + order_sql.MARK_DONE,
                           (["oev_19990", "oev_19991"], ["co_1"])).fetchone()
    assert row is not None
    used = _index_names(row[0][0]["Plan"])
    assert "order_events_outbox_pkey" in used and "order_pending_pkey" in used


@pytest.mark.parametrize(("sql", "params", "index"), [
    (order_sql.OPEN_ORDERS, (), "order_pending_open"),
    (reconcile_store._IN_FLIGHT, {"w": "w_7"}, "order_pending_open"),
    (order_sql.UNRELEASED, (0, 5000), "order_pending_unreleased"),
])
def test_open_and_unreleased_orders_are_read_from_their_own_index(
        db_url: str, sql: str, params: Any, index: str) -> None:
    """20,000 pending orders, all but 10 ended: each read goes by its partial index, whatever the settings (a
    wallet's open orders too: reconciliation asks for them at every pass)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at)"
                     " SELECT 'co_' || g, 'w_' || (g % 100), 'a_1',"
                     " CASE WHEN g > 10 THEN now() - make_interval(secs => g) END FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE order_pending")
        row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    assert index in _index_names(row[0][0]["Plan"])


def test_booking_a_fan_out_finds_each_followers_position_without_stepping_over_the_others(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:  # statistics from when two positions existed
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " VALUES ('w_a', 'a_0', '0xa', 1), ('w_b', 'a_9', '0xb', 1)")
        conn.execute("ANALYZE positions")
        # then one leader's trade copied by 1,000 followers: 1,000 holders of one asset
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " SELECT 'w_' || g, 'a_1', '0x' || g, 10 FROM generate_series(1, 1000) g")
    with psycopg.connect(db_url, options=order_store.PLANNER_OPTIONS) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + fill_store._UPDATE_POSITIONS_AND_STATS,
                           _booking(100, opening=False)).fetchone()
        conn.rollback()
    assert row is not None
    nodes = plan_nodes(row[0][0]["Plan"])
    stepped = sum(n.get("Rows Removed by Filter", 0) * n.get("Actual Loops", 1) for n in nodes
                  if n.get("Relation Name") == "positions")
    # through an index on the asset alone, each of the 100 lookups read the 1,000 holders of the asset
    assert stepped < 100, [(n.get("Index Name"), n.get("Rows Removed by Filter")) for n in nodes]


def _positions_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in plan_nodes(plan) if n.get("Relation Name") == "positions" and n["Node Type"] != "ModifyTable"]


def _booking(n: int, *, opening: bool = True) -> tuple[str, str]:
    """The parameters of a booking of ``n`` fills of asset a_1, one per wallet w_1..w_n (each opening a position)."""
    stats = orjson.dumps([{"sub": f"sub_{i}", "copied": 1, "exposure": "1", "pnl": "0"} for i in range(n)]).decode()
    rows = orjson.dumps([{"w": f"w_{i}", "a": "a_1", "c": "", "size": "11", "avg": "0.5", "cost": "5.5", "pnl": "0",
                          "pid": f"pos_{i}" if opening else None, "origin": "COPY", "sub": f"sub_{i}", "venue": None,
                          "outcome": "Yes", "base": None} for i in range(1, n + 1)]).decode()
    return stats, rows


@pytest.fixture
def one_position_seen(db_url: str) -> str:
    """Statistics taken when ``positions`` held one row (what a connection of a fresh database plans with)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " VALUES ('w_0', 'a_0', '0xa', 1)")
        conn.execute("ANALYZE positions")
    return db_url


def test_a_small_bookings_cached_plan_reads_only_the_batchs_positions(one_position_seen: str) -> None:
    with psycopg.connect(one_position_seen, autocommit=True) as conn:  # then the table grows past its statistics
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size)"
                     " SELECT 'w_' || g, 'a_1', '0x' || g, 0 FROM generate_series(1, 1000) g")
    scans = _positions_scans(_generic_plan(one_position_seen, *_booking(1), fill_store._UPDATE_FEW_POSITIONS_AND_STATS))
    # the life that ended is looked up by key; the rows updated are those of the batch's wallets: without the bound,
    # the plan made on one row walked the whole index for every row of every booking
    assert len(scans) == 2 and all("follower_wallet_id" in n.get("Index Cond", n.get("Recheck Cond", ""))
                                   for n in scans), scans


def _generic_plan(db_url: str, stats: str, rows: str, sql: str) -> dict[str, Any]:
    with psycopg.connect(db_url, options=order_store.PLANNER_OPTIONS) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        row = conn.execute("EXPLAIN (FORMAT JSON) " + sql, (stats, rows)).fetchone()
    assert row is not None
    return row[0][0]["Plan"]  # type: ignore[no-any-return]


def _resolved_markets(db_url: str) -> None:
    """1,000 resolved markets of two tokens, each token held by 10 wallets whose positions all ended (20,000 rows),
    2,000 positions open in other markets with 50 orders in flight on them, and 20,000 archived lives."""
    cid = "'0x' || lpad(to_hex({}), 64, '0')"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, source, received_at,"
                     f" payload) SELECT {cid.format('g')}, ARRAY['a_' || g || '_0', 'a_' || g || '_1'],"
                     " 'a_' || g || '_0', 'CLOB_SOCKET', now(), '' FROM generate_series(1, 1000) g")
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, id, state)"
                     f" SELECT 'w_' || w, 'a_' || g || '_' || t, {cid.format('g')}, '0xa', 0, 'pos_' || g || '_' || t"
                     " || '_' || w, CASE WHEN t = 0 THEN 'REDEEMED' ELSE 'RESOLVED_LOST' END"
                     " FROM generate_series(1, 1000) g, generate_series(0, 1) t, generate_series(1, 10) w")
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, id, state)"
                     f" SELECT 'w_' || (g % 100), 'open_' || g, {cid.format('100000 + g')}, '0xa', 10,"
                     " 'pos_open_' || g, 'OPEN' FROM generate_series(1, 2000) g")
        conn.execute("INSERT INTO order_pending (client_order_id, follower_wallet_id, asset_id, terminal_at)"
                     " SELECT 'co_' || g, 'w_' || (g % 100), 'open_' || (g % 2000), CASE WHEN g > 50 THEN now() END"
                     " FROM generate_series(1, 20000) g")
        conn.execute("INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state,"
                     " origin, venue, size, avg_price, cost_usd, realized_pnl_usd, opened_at, updated_at)"
                     f" SELECT 'h_' || g, 'w_' || (g % 100), 'a_' || (g % 1000) || '_0', {cid.format('g % 1000')},"
                     " '0xa', CASE WHEN g % 10 = 0 THEN 'RESOLVED_WON' ELSE 'CLOSED' END, 'COPY', 'INSIDERS', 0, 0, 0,"
                     " 0, now(), now() FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE")


@pytest.mark.parametrize(("sql", "params"), [
    (settlement_store._LOAD, {"assets": ["a_7_0", "a_7_1"]}),
    (settlement_store._HELD, {"assets": ["a_7_0", "a_7_1"]}),
])
def test_settlement_finds_a_markets_open_positions_by_token_among_the_open_ones_alone(
        db_url: str, sql: str, params: Any) -> None:
    """Settling a market probes each token's open positions (index positions_open_asset), not every wallet that ever
    held it (the sweeps' reads: test_settlement_sweep_lookup)."""
    _resolved_markets(db_url)
    with psycopg.connect(db_url, options=order_store.PLANNER_OPTIONS) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
        conn.rollback()
    assert row is not None
    scans = _positions_scans(row[0][0]["Plan"])
    assert [n.get("Index Name") for n in scans] == ["positions_open_asset"], scans
    assert all(n.get("Rows Removed by Filter", 0) == 0 for n in scans), scans
    assert "order_pending_open" in _index_names(row[0][0]["Plan"])


def test_a_confirmed_redemption_finds_the_archived_winning_lives_by_wallet_and_market(db_url: str) -> None:
    _resolved_markets(db_url)
    params = (orjson.dumps([{"w": "w_10", "c": "0x" + "0" * 61 + "00a"}]).decode(),)
    with psycopg.connect(db_url, options=order_store.PLANNER_OPTIONS) as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + redemption_store._REDEEMED, params).fetchone()
        conn.rollback()
    assert row is not None
    nodes = [n for n in plan_nodes(row[0][0]["Plan"]) if n.get("Relation Name") == "position_history"
             and n["Node Type"] != "ModifyTable"]
    assert [n.get("Index Name") for n in nodes] == ["position_history_won"], nodes
