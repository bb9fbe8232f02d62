"""Guard's write of the subscriptions' unrealized PnL takes their ``subscription_stats`` rows in key order, as the
executor's fill booking, settlement and reconciliation take them, so it never deadlocks with them.

Its ``UPDATE ... FROM unnest(...)`` took the rows in its plan's order: with a few subscriptions out of many, a hash
join over a scan of the table, that is the rows' order on disk (where their last update left them), not the order
the values come in. A pass writing sub_b then sub_a met a booking that had taken sub_a and waited for sub_b
(40P01): PostgreSQL aborted one after a second's wait, the pass's writes (the guard loop counts an error and writes
them again a pass later) or the journal's batch (retried), the other held that second. A third transaction holding
a stats row holds the booking at the chosen point.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import create_pool
from services.guard.adapters.perf_store import PerfStore
from tests.executor.conftest import rows
from tests.executor.test_lock_order_stats import OTHER, _book_on, _buy, _connect
from tests.helpers import eventually
from tests.lock_race import lock_waiters

pytestmark = pytest.mark.integration


@pytest.fixture
async def perf_store(db_url: str) -> AsyncIterator[PerfStore]:
    """Guard's performance store on a pool of its own (autocommit, as guard's)."""
    pool: AsyncConnectionPool[Any] = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        yield PerfStore(pool, lambda: datetime.now(UTC))
    finally:
        await pool.close()


async def test_the_unrealized_pnl_write_takes_its_stats_rows_in_key_order(db_url: str,
                                                                           perf_store: PerfStore) -> None:
    # sub_b's row lies before sub_a's on disk; a hash join over the table meets it first
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO subscription_stats (subscription_id, fills_version) VALUES"
                     " ('sub_b', 1), ('sub_a', 1), ('sub_ab', 1)")
    async with await _connect(db_url) as gate_conn:
        async with gate_conn.transaction():  # holds the booking at sub_ab, with sub_a taken
            await gate_conn.execute("SELECT 1 FROM subscription_stats WHERE subscription_id = 'sub_ab' FOR UPDATE")

            async def booking() -> None:
                async with await _connect(db_url) as conn:
                    await _book_on(conn, [_buy("w_1", "sub_b", OTHER), _buy("w_2", "sub_ab", OTHER),
                                          _buy("w_3", "sub_a", OTHER)])

            booked = asyncio.create_task(booking())
            await eventually(lambda: booked.done() or lock_waiters(db_url) == 1)
            written = asyncio.create_task(perf_store.save_unrealized([("sub_a", D(7)), ("sub_b", D(7))]))
            await eventually(lambda: written.done() or lock_waiters(db_url) == 2)
        done = await asyncio.gather(booked, written, return_exceptions=True)
    assert [getattr(r, "sqlstate", "") or "" if isinstance(r, BaseException) else r for r in done] == [None, 2]
    assert rows(db_url, "SELECT subscription_id, copied, exposure_usd, unrealized_pnl_usd FROM subscription_stats"
                        " ORDER BY 1") == [("sub_a", 1, D(5), D(7)), ("sub_ab", 1, D(5), D(0)),
                                           ("sub_b", 1, D(5), D(7))]
