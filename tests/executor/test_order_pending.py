"""Which orders are open, and which ended without their reservation's release recorded (``order_pending``): kept
by the journal's own statements, and the reason it exists: an order's updates never touch an index of ``orders``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from common.ids import hash_id
from common.storage import create_pool, migration_files
from services.executor.adapters import order_sql
from services.executor.adapters.order_store import Change, OrderStore, intent_json, update_json
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.order_lifecycle import State
from services.executor.reconciling import resized_id
from services.router.adapters import store_sql
from tests.executor.conftest import ASSET, make_order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

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


# --- the SELLs the router counts from here (unclaimed_sell, migration 0730) --------------------------------------

ROUTER_COPY = hash_id("co", "lt_1", "w_1", ASSET)  # the router's copy id: "co_" + 32 hex digits
# client order id, origin, side -> marked: a SELL the router cannot count from Redis (it claimed nothing there)
MARKS = [
    ("tr_exit_1", epb.ORDER_ORIGIN_TRIGGER, cpb.SIDE_SELL, True),  # guard's exit
    ("mo_manual_1", epb.ORDER_ORIGIN_MANUAL, cpb.SIDE_SELL, True),  # a manual SELL
    (resized_id(ROUTER_COPY), epb.ORDER_ORIGIN_COPY, cpb.SIDE_SELL, True),  # a copy re-sized by reconciliation
    ("copy_by_hand", epb.ORDER_ORIGIN_COPY, cpb.SIDE_SELL, True),  # a copy given to SubmitOrder
    ("co_" + "AB" * 16, epb.ORDER_ORIGIN_COPY, cpb.SIDE_SELL, True),  # not the router's form (upper case)
    (ROUTER_COPY, epb.ORDER_ORIGIN_COPY, cpb.SIDE_SELL, False),  # the router's copy: counted from Redis
    (hash_id("co", "lt_2", "w_1", ASSET), epb.ORDER_ORIGIN_COPY, cpb.SIDE_BUY, False),  # BUYs never
    ("mo_manual_buy", epb.ORDER_ORIGIN_MANUAL, cpb.SIDE_BUY, False),
    (resized_id(ROUTER_COPY) + "b", epb.ORDER_ORIGIN_COPY, cpb.SIDE_BUY, False),
]


def _marked(db_url: str) -> dict[str, bool]:
    with psycopg.connect(db_url) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT client_order_id, unclaimed_sell FROM order_pending")}


def _intents(*rows: tuple[str, int, int, bool]) -> list[Any]:
    now = time.time_ns()
    out = []
    for i, (coid, origin, side, _) in enumerate(rows):
        selling = side == cpb.SIDE_SELL
        order = make_order(i, client_order_id=coid, origin=origin, side=side, amount_usd="" if selling else "10",
                           size="10" if selling else "")
        out.append(prepare(order, None, RULES, now))
    return out


async def test_the_intent_insert_marks_the_sells_the_router_does_not_claim(store: OrderStore, db_url: str) -> None:
    """Exits, manual SELLs and copies of an id not of the router's form are marked; the router's copies and BUYs not,
    and only the marked open ones are in the router's index."""
    prepared = _intents(*MARKS)
    assert not any(p.life.terminal for p in prepared)  # all open
    assert await store.insert_intents([(p.ticket, p.life) for p in prepared]) == {m[0] for m in MARKS}
    assert _marked(db_url) == {coid: marked for coid, _, _, marked in MARKS}
    # an exit refused at its intent is marked too, but ended: never in the index
    (refused,) = _intents(("tr_exit_refused", epb.ORDER_ORIGIN_TRIGGER, cpb.SIDE_SELL, True))
    await store.insert_intents([(refused.ticket, dataclasses.replace(refused.life, state=State.REJECTED))])
    with psycopg.connect(db_url) as conn:
        conn.execute("SET enable_seqscan = off")
        indexed = {r[0] for r in conn.execute("SELECT client_order_id FROM order_pending"
                                              " WHERE terminal_at IS NULL AND unclaimed_sell AND asset_id = %s",
                                              (ASSET,))}
        plan = conn.execute("EXPLAIN SELECT client_order_id FROM order_pending"
                            " WHERE terminal_at IS NULL AND unclaimed_sell AND asset_id = %s", (ASSET,)).fetchall()
    assert indexed == {coid for coid, _, _, marked in MARKS if marked}
    assert "order_pending_unclaimed" in str(plan)  # either of the router's indexes of them (0730, 0800)


async def test_the_migration_marks_the_open_orders_as_the_insert_does(store: OrderStore, db_url: str) -> None:
    """0730 marks the orders open when it is applied (inserted unmarked by an older executor) with the insert's rule;
    an ended one stays as it is (no reader looks at it). Applied again, it changes nothing."""
    prepared = _intents(*MARKS)
    await store.insert_intents([(p.ticket, p.life) for p in prepared])
    ended = MARKS[0][0]
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE order_pending SET unclaimed_sell = false")
        conn.execute("UPDATE order_pending SET terminal_at = now() WHERE client_order_id = %s", (ended,))
    migration = next(p for p in migration_files() if p.name.startswith("0730_"))
    for _ in range(2):
        with psycopg.connect(db_url) as conn:
            conn.execute(migration.read_text().encode())
        assert _marked(db_url) == {coid: marked and coid != ended for coid, _, _, marked in MARKS}


def test_the_executor_knows_the_routers_copies_by_the_routers_own_form() -> None:
    assert order_sql.ROUTER_COPY_ID == store_sql.ROUTER_COPY_ID
    migration = next(p for p in migration_files() if p.name.startswith("0730_"))
    assert f"'{order_sql.ROUTER_COPY_ID}'" in migration.read_text()
