"""Guard's connections keep one generic plan per prepared statement (``PLANNER_OPTIONS``): a statement whose keys
come in an array was planned again at every run, the fire's row locks among them (on the tick → SELL path), and
each of those plans still reaches its rows by key on a table whose statistics saw it empty."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from services.guard.adapters import trigger_sql as sql
from services.guard.adapters.publishers import PUBLISHED, UNPUBLISHED
from services.guard.adapters.trigger_store import PLANNER_OPTIONS
from services.guard.domain.lost_refires import candidate_ids
from tests.helpers import generic_plan_scans

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, tzinfo=UTC)
T = "trg_1"
# (statement, parameters, the relation it must reach by key): the fire's and settle's statements, the outbox's
STATEMENTS: dict[str, tuple[str, Any, str]] = {
    "fire: lock the position": (sql.LOCK_POSITION, (T,), "triggers"),
    "fire: lock the group": (sql.LOCK_GROUP, (T,), "triggers"),
    "fire: lock the rows": (sql.LOCK_ROWS, ([T, "trg_2"], T), "triggers"),
    "fire: the position's facts": (sql.FACTS, (candidate_ids(T), T), "triggers"),
    "fire: cancel the siblings": (sql.CANCEL_SIBLINGS, ("OCO_SIBLING_FIRED", NOW, ["trg_2"]), "triggers"),
    "settle: lock in key order": (sql.LOCK_IDS, ([T, "trg_2"],), "triggers"),
    "outbox: unpublished": (UNPUBLISHED, (100,), "guard_trigger_events"),
    "outbox: published": (PUBLISHED, (NOW, [1, 2]), "guard_trigger_events"),
}


def _seed(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for tid, group in ((T, "g"), ("trg_2", "g"), ("trg_3", "")):
            conn.execute("INSERT INTO triggers (id, wallet, follower_wallet_id, asset_id, kind, trigger_price,"
                         " sell_fraction, price_source, state, source, oco_group, create_time, update_time) VALUES"
                         " (%s, '0x' || repeat('ab', 20), 'w_1', 'a_1', 'STOP_LOSS', 0.4, 1, 'BEST_BID', 'ARMED',"
                         " 'MANUAL', %s, %s, %s)",
                         (tid, group, NOW, NOW))
        conn.execute("ANALYZE triggers")
        conn.execute("ANALYZE guard_trigger_events")


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_statement_run_again_is_not_planned_again(db_url: str, name: str) -> None:
    _seed(db_url)
    statement, params, _relation = STATEMENTS[name]
    with psycopg.connect(db_url, options=PLANNER_OPTIONS) as conn:  # a transaction, rolled back: nothing changes
        for _ in range(8):
            conn.execute(statement, params, prepare=True)
        plans = conn.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements").fetchall()
        conn.rollback()
    assert plans == [(8, 0)], f"{name}: (generic, custom) plans {plans}"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_the_one_plan_reaches_its_rows_by_key_on_a_table_seen_empty(db_url: str, name: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE triggers")
        conn.execute("ANALYZE guard_trigger_events")
    statement, params, relation = STATEMENTS[name]
    scans = generic_plan_scans(db_url, statement, params, [relation], options=PLANNER_OPTIONS)[relation]
    assert scans and "Seq Scan" not in scans, f"{name}: {scans}"
