"""The journal's sweep (outbox events and reservation releases the post-commit step missed) runs every
``sweep_interval_s`` under steady load too: a release that hit one Redis error after its commit is retried
while other orders keep changing, not only once the queue goes quiet."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from common import reservations
from common.streams import ORDER_EVENTS
from services.executor.adapters import order_sql
from services.executor.adapters.order_sql import UNPUBLISHED_SQL
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from tests.executor.conftest import refused_change, running_journal
from tests.helpers import eventually, plan_nodes

pytestmark = pytest.mark.integration


def _sql(db_url: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(query, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


async def test_failed_release_is_retried_while_other_orders_keep_moving(db_url: str, redis_url: str) -> None:
    calls = {"n": 0}

    async def flaky_release(redis: Any, ids: list[str]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:  # one transient Redis error right after the commit
            raise ConnectionError("redis blip")
        return await reservations.release_many(redis, ids)

    async with running_journal(db_url, redis_url, flaky_release, 0.3) as (journal, r, _sr):
        first = refused_change(1)
        coid = first.life.client_order_id
        await reservations.reserve(r, [reservations.Reservation(coid, "w_1", reservations.USD, "0xm", 10_000_000)])
        await journal.write([], inserts=[first])  # terminal (REJECTED) and committed; the release fails
        # other orders keep changing every 0.1 s for 3 s (10 sweep intervals)
        for k in range(30):
            await journal.write([], inserts=[refused_change(1000 + k)])
            await asyncio.sleep(0.1)
        held = (await reservations.read(r, ["w_1"]))["w_1"].total_usd_micro
        assert held == 0, f"reservation of a REJECTED order still held after 3 s of load: {held} micro-USD"


async def test_the_outbox_empties_as_events_are_appended_and_the_sweep_appends_what_was_missed(
        db_url: str, redis_url: str) -> None:
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2) as (journal, _r, sr):
        await journal.write([], inserts=[refused_change(1), refused_change(2)])
        await eventually(lambda: _sql(db_url, "SELECT count(*) FROM order_events_outbox") == [(0,)])
        # an event whose append was missed (a crash after the commit): still in the outbox
        [(event_id, seq)] = _sql(db_url, "SELECT event_id, seq FROM order_events ORDER BY seq LIMIT 1")
        _sql(db_url, "INSERT INTO order_events_outbox (event_id, seq) VALUES (%s, %s)", event_id, seq)
        before = await sr.xlen(ORDER_EVENTS)
        await eventually(lambda: _sql(db_url, "SELECT count(*) FROM order_events_outbox") == [(0,)])
        assert await sr.xlen(ORDER_EVENTS) == before + 1  # appended by the sweep
        assert _sql(db_url, "SELECT count(*) FROM order_events") == [(2,)]  # the history is not touched


async def test_a_burst_of_ended_orders_is_released_in_short_scripts(db_url: str, redis_url: str) -> None:
    """Redis runs a release script alone, so a fan-out's releases go in short scripts (500 in one held it up to 22 ms
    while the next fan-out's claims and book reads waited)."""
    sizes: list[int] = []

    async def recording_release(redis: Any, ids: list[str]) -> list[int]:
        sizes.append(len(ids))
        return await reservations.release_many(redis, ids)

    async with running_journal(db_url, redis_url, recording_release, 60.0) as (journal, _r, _sr):
        await journal.write([], inserts=[refused_change(5000 + k) for k in range(250)])  # terminal at once
        await eventually(lambda: sum(sizes) >= 250)
    assert sum(sizes) == 250
    assert max(sizes) <= 100, sizes


class _BlipOnce(OrderStore):
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
    the periodic sweep's, not end the task: otherwise every later write (the start-up resume, each order's
    SUBMITTING -> PLACED -> FILLED) waits forever and the executor is wedged."""
    async with running_journal(db_url, redis_url, reservations.release_many, 0.2, _BlipOnce) as (journal, _r, _s):
        try:
            inserted = await asyncio.wait_for(journal.write([], inserts=[refused_change(1)]), timeout=5)
        except TimeoutError:
            raise AssertionError("journal write never completed: the journal task ended") from None
        assert inserted == {"co_test00001"}


def test_the_sweeps_outbox_read_visits_the_old_events_alone(db_url: str) -> None:
    """A long history; in the outbox 300 events missed an hour ago, and 4,000 just appended (held until Redis has
    them on disk, as the outbox always holds the last seconds): the sweep's read visits the 300 and nothing else."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO order_events (event_id, client_order_id, type, payload, created_at)"
                     " SELECT 'ev_' || i, 'co_' || i, 'ORDER_FILLED', '\\x00',"
                     " now() - CASE WHEN i <= 20000 THEN interval '1 hour' ELSE interval '0' END"
                     " FROM generate_series(1, 24000) AS i")
        conn.execute("INSERT INTO order_events_outbox (event_id, seq, created_at)"
                     " SELECT event_id, seq, created_at FROM order_events WHERE seq > 19700")
        conn.execute("ANALYZE order_events")
        conn.execute("ANALYZE order_events_outbox")
    with psycopg.connect(db_url, autocommit=True, options=PLANNER_OPTIONS) as conn:  # the executor's planner
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + UNPUBLISHED_SQL, (2.0, 5000)).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    nodes = plan_nodes(plan)
    # without an index on the outbox: every history row compared with every outbox row (a join filter)
    assert not any("Join Filter" in n for n in nodes), nodes
    outbox = [n for n in nodes if n.get("Relation Name") == "order_events_outbox"]
    assert [n["Node Type"] for n in outbox] in (["Index Scan"], ["Bitmap Heap Scan"]), nodes
    assert "order_events_outbox_age" in {n.get("Index Name") for n in plan_nodes(outbox[0])}, nodes
    assert outbox[0]["Actual Rows"] == 300  # the young rows are not visited, let alone looked up
    assert plan["Actual Rows"] == 300


def test_the_sweep_reads_the_outbox_oldest_first(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO order_events (event_id, client_order_id, type, payload, created_at)"
                     " SELECT 'ev_' || i, 'co_1', 'ORDER_FILLED', '\\x00', now() - interval '1 hour'"
                     " FROM generate_series(1, 5) AS i")
        conn.execute("INSERT INTO order_events_outbox (event_id, seq, created_at)"
                     " SELECT event_id, seq, created_at FROM order_events ORDER BY seq DESC")
    with psycopg.connect(db_url, autocommit=True, options=PLANNER_OPTIONS) as conn:
        rows = conn.execute(UNPUBLISHED_SQL, (2.0, 3)).fetchall()
    assert [r[1] for r in rows] == ["ev_1", "ev_2", "ev_3"]


def test_an_event_enters_the_outbox_with_its_age_in_the_history(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(order_sql.INSERT_EVENTS, (json.dumps([{"id": "ev_x", "coid": "co_x", "type": "ORDER_FILLED",
                                                            "p": ""}]),))
        [(outbox_at, history_at)] = conn.execute(
            "SELECT o.created_at, e.created_at FROM order_events_outbox o JOIN order_events e USING (seq)").fetchall()
    assert outbox_at == history_at
