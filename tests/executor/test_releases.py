"""Reservation releases Redis may not have: after the Redis server changed (a restart, a failover), the releases
of the last minute are done again; at the executor's start, those of the orders that ended in the minute before the
last order end (a crash of the machine running Redis and the executor took both Redis's last second and the
executor's memory); a release Redis kept is not done twice."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from common import reservations
from common.storage import create_pool
from services.executor.adapters import order_sql
from services.executor.adapters.order_store import PLANNER_OPTIONS, OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.releases import Repairs
from tests.executor.conftest import make_order, placed_change, refused_change
from tests.helpers import plan_nodes

pytestmark = pytest.mark.integration


def _claim(coid: str, micro: int) -> reservations.Reservation:
    return reservations.Reservation(coid, "w_1", reservations.USD, "0xm", micro, "lt_1")


async def _held(r: aioredis.Redis) -> int:
    return (await reservations.read(r, ["w_1"]))["w_1"].total_usd_micro


async def test_releases_redis_lost_are_done_again_once_the_server_changed(r: aioredis.Redis, db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    server = {"id": "a"}
    now = {"t": 1000.0}

    async def server_id() -> str:
        return server["id"]

    repairs = Repairs(r, OrderStore(pool), reservations.release_many, server_id=server_id, clock=lambda: now["t"],
                      keep_s=60)
    try:
        await reservations.reserve(r, [_claim("co_old", 1_000_000), _claim("co_1", 2_000_000),
                                       _claim("co_2", 3_000_000)])
        for coid in ("co_old", "co_1", "co_2"):
            assert await reservations.release(r, coid) > 0
        repairs.released(["co_old"])
        now["t"] += 61
        repairs.released(["co_1", "co_2"])
        await repairs.run()  # the first pass learns the server
        assert await _held(r) == 0
        # the server fails over to a replica that missed the last releases (and one older one): their claims
        # and amounts are as before the releases
        await r.delete(*(reservations.ORDER_PREFIX + c for c in ("co_old", "co_1", "co_2")))
        await reservations.reserve(r, [_claim("co_old", 1_000_000), _claim("co_1", 2_000_000),
                                       _claim("co_2", 3_000_000)])
        await repairs.run()  # same server: nothing done
        assert await _held(r) == 6_000_000
        server["id"] = "b"
        await repairs.run()
        assert await _held(r) == 1_000_000  # the last minute's releases again; co_old is older than that
        assert repairs.redone == 2
        await repairs.run()
        assert await _held(r) == 1_000_000 and repairs.redone == 2
    finally:
        await pool.close()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[OrderStore]:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        yield OrderStore(pool)
    finally:
        await pool.close()


async def _ended(store: OrderStore, db_url: str, i: int, ago_s: float) -> str:
    """Order ``i`` refused (REJECTED: it ended) ``ago_s`` seconds ago, its release recorded as done."""
    change = refused_change(i)
    coid = change.life.client_order_id
    await store.apply([change], [])
    await store.mark_done([], [coid])
    with psycopg.connect(db_url, autocommit=True) as conn:  # the same time in both, as the journal writes them
        conn.execute("UPDATE order_events SET created_at = now() - make_interval(secs => %s)"
                     " WHERE client_order_id = %s", (ago_s, coid))
        conn.execute("UPDATE orders SET terminal_at = now() - make_interval(secs => %s) WHERE client_order_id = %s",
                     (ago_s, coid))
    return coid


async def _open(store: OrderStore, db_url: str, i: int, ago_s: float) -> str:
    """Order ``i`` at the venue (PLACED ``ago_s`` seconds ago): open, its reservation held."""
    p = prepare(make_order(i), None, IntakeRules(live_configured=True), time.time_ns())
    await store.insert_intents([(p.ticket, p.life)])
    change, _ = placed_change(p.ticket, p.life, time.time_ns())
    await store.apply([], [change])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE order_events SET created_at = now() - make_interval(secs => %s)"
                     " WHERE client_order_id = %s", (ago_s, p.ticket.client_order_id))
    return p.ticket.client_order_id


async def _server_id() -> str:
    return "after-the-crash"


async def test_releases_a_crash_lost_are_done_again_at_the_next_start_up_to_the_last_order_end(
        r: aioredis.Redis, store: OrderStore, db_url: str) -> None:
    """The machine running Redis and the executor crashed an hour ago. Redis came back without its last second of
    writes: releases PostgreSQL had recorded as done. The executor started 30 minutes ago (its first passes failed
    until now) and an order ended since, whose release Redis lost too (a later loss: not this start's to redo).
    The start redoes the releases of the minute before the last end before it, not of the minute before now."""
    out_of_window = await _ended(store, db_url, 1, 3600 + 120)
    in_window = await _ended(store, db_url, 2, 3600 + 30)
    last = await _ended(store, db_url, 3, 3600)
    kept = await _ended(store, db_url, 4, 3600 + 10)  # its release is on Redis's disk
    after_start = await _ended(store, db_url, 5, 60)
    still_open = await _open(store, db_url, 6, 3600 + 20)
    micro = {out_of_window: 1_000_000, in_window: 2_000_000, last: 4_000_000, kept: 8_000_000,
             after_start: 16_000_000, still_open: 32_000_000}
    await reservations.reserve(r, [_claim(c, m) for c, m in micro.items()])
    assert await reservations.release_many(r, [kept]) == [8_000_000]
    repairs = Repairs(r, store, reservations.release_many, server_id=_server_id, started=time.time() - 1800)

    await repairs.run()

    assert await _held(r) == 1_000_000 + 16_000_000 + 32_000_000, (
        "released again: the orders that ended in the 60 s up to the last end before the start, and nothing else")
    assert repairs.redone_at_start == 2 and repairs.redone == 0
    await repairs.run()  # once per start
    assert await _held(r) == 49_000_000 and repairs.redone_at_start == 2


async def test_a_start_with_no_order_ever_ended_releases_nothing(r: aioredis.Redis, store: OrderStore,
                                                                 db_url: str) -> None:
    still_open = await _open(store, db_url, 1, 5)
    await reservations.reserve(r, [_claim(still_open, 2_000_000), _claim("co_routed_not_admitted", 3_000_000)])
    assert await store.last_ended(Repairs(r, store, reservations.release_many).started, 60) == (None, [])
    repairs = Repairs(r, store, reservations.release_many, server_id=_server_id)

    await repairs.run()

    assert await _held(r) == 5_000_000
    assert repairs.redone_at_start == 0 and repairs.start_done


def _index_names(plan: dict[str, Any]) -> set[str]:
    return {n["Index Name"] for n in plan_nodes(plan) if "Index Name" in n}


@pytest.mark.parametrize("options", ["", PLANNER_OPTIONS])
def test_the_last_ended_orders_are_read_from_their_own_index(db_url: str, options: str) -> None:
    """200,000 events of 60,000 orders over a week: the start's read probes the last end and reads the minute
    before it from order_events_ended, never the whole history."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO order_events (event_id, client_order_id, type, payload, created_at)"
                     " SELECT 'ev_' || g || '_' || k, 'co_' || g,"
                     " (ARRAY['ORDER_EVENT_TYPE_PLACED', 'ORDER_EVENT_TYPE_PARTIALLY_FILLED',"
                     "        'ORDER_EVENT_TYPE_FILLED', 'ORDER_EVENT_TYPE_CANCELLED'])[k], '\\x00',"
                     " now() - make_interval(secs => (60000 - g) * 10 + 4 - k)"
                     " FROM generate_series(1, 60000) g, generate_series(1, CASE WHEN g % 3 = 0 THEN 4 ELSE 3 END) k"
                     " WHERE k <> 3 OR g % 3 <> 0")
        conn.execute("ANALYZE order_events")
    with psycopg.connect(db_url, autocommit=True, options=options) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + order_sql.LAST_ENDED,
                           {"before": datetime.now(UTC) + timedelta(hours=1), "window": 60.0}).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    scans = [n for n in plan_nodes(plan) if n.get("Relation Name") == "order_events"]
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
    assert _index_names(plan) >= {"order_events_ended"}, plan
    assert max(n.get("Actual Rows", 0) for n in scans) <= 10, scans  # the last end; the 7 ends of its minute
