"""An appended order event leaves the outbox only once Redis cannot lose it any more: ``durable_after_s`` after
its append, and after a check that the Redis server is still the one it was appended to. A server that changed
meanwhile (a machine crash under ``appendfsync everysec``, a failover) gets every held event again. Real
PostgreSQL and Redis; the server's identity is the test's to change."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from common import reservations
from common.streams import ORDER_EVENTS
from services.executor.domain.order_intake import IntakeRules
from services.executor.journal import Journal
from tests.executor.conftest import refused_change, running_journal
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


class Server:
    """The Redis server's identity as the journal sees it."""

    def __init__(self) -> None:
        self.run_id = "a" * 40

    async def __call__(self) -> str:
        return self.run_id


def _journal(db_url: str, redis_url: str, server: Server, *, durable_after_s: float,
             sweep_interval_s: float = 0.05) -> contextlib.AbstractAsyncContextManager[tuple[Journal, Any, Any]]:
    return running_journal(db_url, redis_url, reservations.release_many, sweep_interval_s, server_id=server,
                           durable_after_s=durable_after_s)


def _outbox(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM order_events_outbox").fetchone()
    assert row is not None
    return int(row[0])


async def _logged(sr: Any) -> list[str]:
    """The event ids in the order-event stream, in log order."""
    return [epb.OrderEvent.FromString(fields[b"p"]).event_id for _id, fields in await sr.xrange(ORDER_EVENTS)]


async def _count(sr: Any, n: int) -> bool:
    return len(await _logged(sr)) == n


async def test_an_appended_event_stays_in_the_outbox_until_it_is_durable_and_is_appended_once(
        db_url: str, redis_url: str) -> None:
    server = Server()
    async with _journal(db_url, redis_url, server, durable_after_s=1.0) as (journal, _r, sr):
        await journal.write([], inserts=[refused_change(1), refused_change(2)])
        await eventually(lambda: _count(sr, 2))  # appended after the commit the write waited for
        await asyncio.sleep(0.5)  # ten sweeps: none appends the held events again
        assert _outbox(db_url) == 2
        await eventually(lambda: _outbox(db_url) == 0, timeout_s=5)
        await asyncio.sleep(0.3)
        assert len(await _logged(sr)) == 2
        assert journal.held.republished == 0


async def test_events_the_redis_server_lost_are_appended_again_when_it_changed(db_url: str, redis_url: str) -> None:
    """Appended, then Redis comes back from disk without them (the last second before a machine crash): the
    server's id changed, so every event still held is appended again, in emission order, and only then leaves
    the outbox. Without the hold they would be gone from the log and from the outbox."""
    server = Server()
    async with _journal(db_url, redis_url, server, durable_after_s=1.0) as (journal, _r, sr):
        await journal.write([], inserts=[refused_change(1), refused_change(2)])
        await journal.write([], inserts=[refused_change(3)])
        await eventually(lambda: _count(sr, 3))
        appended = await _logged(sr)
        await sr.delete(ORDER_EVENTS)  # the restarted server never had them
        server.run_id = "b" * 40
        await eventually(lambda: journal.held.republished == 3, timeout_s=5)
        assert await _logged(sr) == appended
        await eventually(lambda: _outbox(db_url) == 0, timeout_s=5)
        assert await _logged(sr) == appended  # held again on the new server, then marked: not a third time


async def test_held_events_outlive_an_executor_crash_and_the_next_start_appends_them(
        db_url: str, redis_url: str) -> None:
    server = Server()
    async with _journal(db_url, redis_url, server, durable_after_s=30.0) as (journal, _r, sr):
        await journal.write([], inserts=[refused_change(1)])
        await eventually(lambda: _count(sr, 1))
        [event_id] = await _logged(sr)
    assert _outbox(db_url) == 1  # stopped (crashed) inside the hold: still in the outbox
    lost = aioredis.from_url(redis_url)
    await lost.delete(ORDER_EVENTS)  # ... and Redis lost it with the same machine
    await lost.aclose()
    async with _journal(db_url, redis_url, server, durable_after_s=0.5) as (journal, _r, sr):
        await eventually(lambda: _outbox(db_url) == 0, timeout_s=5)
        assert await _logged(sr) == [event_id]


async def test_an_event_marked_while_the_sweep_reads_the_outbox_is_not_appended_again(
        db_url: str, redis_url: str) -> None:
    """The sweep's read of the outbox starts while the events are held and ends after their marks were recorded
    (its snapshot still has them): the sweep must not take them for events no append took care of."""
    server = Server()
    async with _journal(db_url, redis_url, server, durable_after_s=0.3, sweep_interval_s=60.0) as (journal, _r, sr):
        await journal.write([], inserts=[refused_change(1), refused_change(2)])
        await eventually(lambda: _count(sr, 2))
        marked = asyncio.Event()
        store = journal.store
        read, mark_done = store.unpublished, store.mark_done

        async def marking(published: list[str], released: list[str]) -> None:
            await mark_done(published, released)
            if published:
                marked.set()

        async def slow_read(min_age_s: float, limit: int = 5000) -> list[tuple[int, str, bytes]]:
            rows = await read(min_age_s, limit)  # both events still in the outbox
            await marked.wait()  # their marks are recorded before the sweep looks at the rows
            return rows

        store.mark_done, store.unpublished = marking, slow_read  # type: ignore[method-assign]
        await asyncio.wait_for(journal.sweep(min_age_s=0.0), timeout=10)
        assert _outbox(db_url) == 0
        assert len(await _logged(sr)) == 2
