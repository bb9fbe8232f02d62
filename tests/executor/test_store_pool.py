"""The executor's pool: autocommit connections (a single statement is one round trip), transactions where needed."""

from __future__ import annotations

import time

import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from tests.executor.conftest import make_order

pytestmark = pytest.mark.integration


async def test_pool_connections_are_autocommit_and_intents_are_visible_at_once(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        async with pool.connection() as conn:
            assert conn.autocommit
        store = OrderStore(pool)
        p = prepare(make_order(1), None, IntakeRules(live_configured=True), time.time_ns())
        assert await store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
        async with pool.connection() as conn:
            assert conn.info.transaction_status.name == "IDLE"  # nothing left open by the insert
        row = await store.order_row(p.ticket.client_order_id)
        assert row is not None and row["state"] == "SUBMITTING"
        assert await store.insert_intents([(p.ticket, p.life)]) == set()  # a replayed intent is not inserted twice
    finally:
        await pool.close()
