"""Which orders are open, and which ended without their reservation's release recorded (``order_pending``): kept
by the journal's own statements, and the reason it exists: an order's updates never touch an index of ``orders``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters import order_sql
from services.executor.adapters.order_store import Change, OrderStore, intent_json, update_json
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from tests.executor.conftest import make_order

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[OrderStore]:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    try:
        yield OrderStore(pool)
    finally:
        await pool.close()


def _prepared(*ids: int) -> list[Any]:
    now = time.time_ns()
    return [prepare(make_order(i), None, RULES, now) for i in ids]


def _change(p: Any, state: State, **facts: Any) -> Change:
    return Change(p.ticket, dataclasses.replace(p.life, state=state, **facts))


def _pending(db_url: str) -> dict[str, bool]:
    """Pending orders: client order id -> ended (awaiting the release's record)."""
    with psycopg.connect(db_url) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT client_order_id, terminal_at IS NOT NULL FROM order_pending")}


async def test_an_order_is_pending_from_its_intent_until_its_release_is_recorded(
        store: OrderStore, db_url: str) -> None:
    a, b, c = _prepared(1, 2, 3)
    await store.insert_intents([(a.ticket, a.life), (b.ticket, b.life)])
    assert _pending(db_url) == {"co_test00001": False, "co_test00002": False}
    assert {r["client_order_id"] for r in await store.open_orders()} == {"co_test00001", "co_test00002"}
    # a filled in the journal's one-statement write; c inserted with b accepted (the transaction's path)
    await store.apply([], [_change(a, State.PLACED, venue_order_id="v1")])
    await store.apply([], [_change(a, State.FILLED, venue_order_id="v1")])
    await store.apply([Change(c.ticket, c.life)], [_change(b, State.PLACED, venue_order_id="v2")])
    assert _pending(db_url) == {"co_test00001": True, "co_test00002": False, "co_test00003": False}
    assert {r["client_order_id"] for r in await store.open_orders()} == {"co_test00002", "co_test00003"}
    assert await store.unreleased(0) == ["co_test00001"]
    await store.apply([], [_change(b, State.CANCELLED, venue_order_id="v2")])
    assert await store.unreleased(0) == ["co_test00001", "co_test00002"]

    # a recorded release ends it; an open order named by mistake stays open
    await store.mark_done([], ["co_test00001", "co_test00003"])
    assert _pending(db_url) == {"co_test00002": True, "co_test00003": False}
    # a later update of a released order (a late fill's fee) does not make it pending again
    await store.apply([], [_change(a, State.FILLED, venue_order_id="v1", detail="late")])
    assert await store.unreleased(0) == ["co_test00002"]


async def test_an_order_refused_at_its_intent_awaits_its_release(store: OrderStore, db_url: str) -> None:
    (a,) = _prepared(1)
    refused = dataclasses.replace(a.life, state=State.REJECTED, reason="INVALID_ORDER_MIN_SIZE")
    assert await store.insert_intents([(a.ticket, refused)]) == {"co_test00001"}
    assert _pending(db_url) == {"co_test00001": True}
    assert await store.open_orders() == []
    assert await store.unreleased(0) == ["co_test00001"]


def test_an_orders_updates_stay_on_its_page_and_touch_no_index(db_url: str) -> None:
    """Every update of an order's life (accepted, filled) is HOT: no index of ``orders`` depends on what changes."""
    (a,) = _prepared(1)
    with psycopg.connect(db_url) as conn:  # one transaction: its own counters
        conn.execute(order_sql.INSERT_INTENTS, (intent_json([(a.ticket, a.life)]),))
        for change in (_change(a, State.PLACED, venue_order_id="v1"), _change(a, State.FILLED, venue_order_id="v1")):
            conn.execute(order_sql.UPDATE_ORDERS, (update_json([change]),))
        row = conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
                           " WHERE relname = 'orders'").fetchone()
    assert row == (2, 2)
