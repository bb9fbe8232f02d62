"""A fill not booked is alerted once when two sweeps read its note at once (the process that booked it, told late
that its commit went through, and the next process's start, or its own periodic sweep): a note one sweep is reporting
is left to it by the other. Real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from tests.executor.conftest import rows
from tests.executor.test_fill_not_booked_restart import _booked_and_stopped, _not_booked_alerts

pytestmark = pytest.mark.integration


async def test_a_fill_not_booked_swept_by_two_at_once_is_alerted_once(db_url: str) -> None:
    fill_id = await _booked_and_stopped(db_url, committed=True)
    pools = [await create_pool(db_url, min_size=1, max_size=2, autocommit=True) for _ in range(2)]
    try:
        booker, starter = OrderStore(pools[0]).unbooked, OrderStore(pools[1]).unbooked
        for _ in range(5):  # each round the note is unreported again, and both sweep it at once
            with psycopg.connect(db_url) as conn:
                conn.execute("UPDATE fills_not_booked SET reported_at = NULL")
            _not_booked_alerts()
            await asyncio.gather(booker.sweep([fill_id]), starter.sweep())
            assert _not_booked_alerts() == [fill_id]
            assert rows(db_url, "SELECT count(*) FROM fills_not_booked WHERE reported_at IS NULL") == [(0,)]
    finally:
        for pool in pools:
            await pool.close()
