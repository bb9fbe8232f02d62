"""Intent inserts on the dedicated connection: same semantics as the pooled path, and it recovers from failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from tests.executor.conftest import make_order

pytestmark = pytest.mark.integration

RULES = IntakeRules(live_configured=True)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[OrderStore]:
    pool = await create_pool(db_url, min_size=1, max_size=4, autocommit=True)
    s = OrderStore(pool, intents_url=db_url)
    try:
        yield s
    finally:
        await s.close()
        await pool.close()


def _items(*ids: int) -> list[tuple[Any, ...]]:
    now = time.time_ns()
    return [(p.ticket, p.life) for p in (prepare(make_order(i), None, RULES, now) for i in ids)]


def _count(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0


async def test_inserts_are_all_or_nothing_and_report_only_the_new_ids(store: OrderStore, db_url: str) -> None:
    assert await store.insert_intents(_items(1, 2)) == {"co_test00001", "co_test00002"}
    assert store.intents is not None and store.intents._conn is not None  # it went the dedicated way
    assert await store.insert_intents(_items(2, 3)) == {"co_test00003"}  # 2 exists: resumed, never re-sent
    assert await store.insert_intents(_items(1)) == set()
    assert _count(db_url) == 3
    row = await store.order_row("co_test00003")
    assert row is not None and row["state"] == "SUBMITTING" and row["limit_price"] is not None


async def test_inserts_arriving_while_it_is_busy_take_the_pool(store: OrderStore, db_url: str) -> None:
    results = await asyncio.gather(*(store.insert_intents(_items(i)) for i in range(10)))
    assert results == [{f"co_test{i:05d}"} for i in range(10)]
    assert _count(db_url) == 10


async def test_a_lost_connection_is_an_operational_error_then_a_new_connection(store: OrderStore, db_url: str) -> None:
    assert await store.insert_intents(_items(1)) == {"co_test00001"}
    assert store.intents is not None and store.intents._conn is not None
    pid = store.intents._conn.info.backend_pid
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):  # the fan-out retries these
        await store.insert_intents(_items(2))
    assert await store.insert_intents(_items(2, 3)) == {"co_test00002", "co_test00003"}
    assert store.intents._conn is not None and store.intents._conn.info.backend_pid != pid


async def test_a_fan_out_chunk_takes_the_pool(store: OrderStore, db_url: str) -> None:
    assert await store.insert_intents(_items(*range(8))) == {f"co_test{i:05d}" for i in range(8)}
    assert store.intents is not None and store.intents._conn is None  # never opened
    assert _count(db_url) == 8


async def test_a_statement_error_is_raised_and_the_next_insert_works(store: OrderStore) -> None:
    assert store.intents is not None
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        await store.intents.insert("not json")
    assert await store.insert_intents(_items(4)) == {"co_test00004"}
