"""The journal (the executor's only writer of order state) survives a storage blip in its start-up sweep."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import redis.asyncio as aioredis

from common import reservations
from common.livefeed import LiveFeed
from common.storage import create_pool
from common.streams import ORDER_EVENTS, DurableLog, create_stream_redis
from services.executor import lifecycle as lc
from services.executor.events import build_event
from services.executor.intake import IntakeRules, prepare
from services.executor.journal import Journal
from services.executor.store import Change, Store
from tests.executor.conftest import make_order


class _BlipOnce(Store):
    """PostgreSQL unreachable for the first outbox read only (a restart, a failover, a pool timeout)."""

    blips = 1

    async def unpublished(self, min_age_s: float, limit: int = 5000) -> list[tuple[int, bytes]]:
        if self.blips:
            self.blips -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await super().unpublished(min_age_s, limit)


async def test_journal_survives_a_storage_blip_during_its_start_up_sweep(db_url: str, redis_url: str) -> None:
    """Every order state change of the executor goes through Journal.write, which waits for the journal task.
    A transient PostgreSQL / Redis failure in the sweep the journal runs when it starts must be retried like
    the periodic sweep's (``_safe_sweep``), not end the task: otherwise every later write (the start-up
    resume, each order's SUBMITTING -> PLACED -> FILLED) waits forever and the executor is wedged."""
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    r = aioredis.from_url(redis_url)
    sr = create_stream_redis(redis_url)
    log_ = DurableLog(sr, ORDER_EVENTS, live=LiveFeed())
    await log_.prime()

    async def release(_redis: Any, ids: list[str]) -> list[int]:
        return await reservations.release_many(r, ids)

    journal = Journal(_BlipOnce(pool), r, log_, release, sweep_interval_s=0.2)
    task = asyncio.create_task(journal.run())
    try:
        p = prepare(make_order(1, asset_id=""), None, IntakeRules(live_configured=True), time.time_ns())
        change = Change(p.ticket, p.life, build_event(p.ticket, p.life, lc.OrderRejected(p.life.reason),
                                                      now_ns=time.time_ns()))
        try:
            inserted = await asyncio.wait_for(journal.write([], inserts=[change]), timeout=5)
        except TimeoutError:
            raise AssertionError(f"journal write never completed; journal task done={task.done()}, "
                                 f"died with {task.exception() if task.done() else None!r}") from None
        assert inserted == {"co_test00001"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        await r.aclose()
        await sr.aclose()
