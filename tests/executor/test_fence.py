"""An executor whose lease was taken over writes nothing more through its store: no intent (so no new POST)
and no fill, position or order change (real PostgreSQL, the executor's own statements)."""

from __future__ import annotations

import time
from decimal import Decimal as D

import psycopg
import pytest

from common.lease import FENCE_SQLSTATE, Lease
from common.storage import create_pool
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from tests.executor.conftest import filled_change, make_order, placed_change, rows

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


@pytest.mark.parametrize("intents_path", ["dedicated", "pool"])
async def test_a_superseded_executor_books_no_fill_and_inserts_no_intent(db_url: str, intents_path: str) -> None:
    old = Lease(db_url, "executor", holder="old", poll_s=0.02)
    new = Lease(db_url, "executor", holder="new", poll_s=0.02)
    await old.acquire()
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True,
                             options=f"{PLANNER_OPTIONS} {old.options}")
    store = OrderStore(pool, intents_url=db_url if intents_path == "dedicated" else "", intents_options=old.options)
    try:
        now = time.time_ns()
        first = prepare(make_order(1), None, RULES, now)
        assert await store.insert_intents([(first.ticket, first.life)]) == {"co_test00001"}
        placed, life = placed_change(first.ticket, first.life, now)
        await store.apply([], [placed])
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (old.backend_pid,))
        assert await new.acquire() == 2  # the old one has not noticed: its store still writes as epoch 1

        with pytest.raises(psycopg.OperationalError) as booking_refused:
            await store.apply([], [filled_change(first.ticket, life, "10", now)])
        assert booking_refused.value.sqlstate == FENCE_SQLSTATE
        second = prepare(make_order(2), None, RULES, now)
        with pytest.raises(psycopg.OperationalError) as intent_refused:
            await store.insert_intents([(second.ticket, second.life)])
        assert intent_refused.value.sqlstate == FENCE_SQLSTATE

        assert rows(db_url, "SELECT client_order_id, state, filled_size FROM orders") == [
            ("co_test00001", "PLACED", D(0))]
        assert rows(db_url, "SELECT count(*) FROM fills") == [(0,)]
        assert rows(db_url, "SELECT count(*) FROM positions") == [(0,)]
    finally:
        await store.close()
        await pool.close()
        await old.close()
        await new.close()
