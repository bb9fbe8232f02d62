"""A pooled connection comes out warm: the pool's ``warm`` hook ran on it, and guard's hook left the reads of a
fire prepared without locking or reading anything."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus

from common.storage import create_pool
from services.guard.adapters.trigger_store import warm_fire_reads

pytestmark = pytest.mark.integration


async def test_every_connection_the_pool_opens_is_warmed_before_it_is_handed_out(db_url: str) -> None:
    warmed: list[int] = []

    async def warm(conn: AsyncConnection[Any]) -> None:
        warmed.append(id(conn))

    pool = await create_pool(db_url, min_size=3, max_size=3, autocommit=True, warm=warm)
    try:
        await pool.wait()
        held: list[AsyncConnection[Any]] = [await pool.getconn() for _ in range(3)]
        assert sorted(id(c) for c in held) == sorted(warmed)
        assert all(c.autocommit for c in held)
        for conn in held:
            await pool.putconn(conn)
    finally:
        await pool.close()


async def test_a_hook_without_autocommit_leaves_no_transaction_open(db_url: str) -> None:
    async def warm(conn: AsyncConnection[Any]) -> None:
        await conn.execute("SELECT 1")

    pool = await create_pool(db_url, min_size=1, max_size=1, warm=warm)
    try:
        conn = await pool.getconn()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        await pool.putconn(conn)
    finally:
        await pool.close()


async def test_guard_pool_connections_have_the_fire_reads_prepared_and_nothing_locked(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=2, max_size=2, autocommit=True, warm=warm_fire_reads)
    try:
        await pool.wait()
        async with pool.connection() as conn:
            prepared = [r["statement"] for r in await (await conn.execute(
                "SELECT statement FROM pg_prepared_statements WHERE from_sql = false")).fetchall()]
            locks = await (await conn.execute(
                "SELECT count(*) AS n FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'")).fetchone()
        assert any("pg_advisory_xact_lock" in s for s in prepared), prepared
        assert any("FOR UPDATE" in s for s in prepared), prepared
        assert any("in_flight" in s for s in prepared), prepared
        assert locks == {"n": 0}
    finally:
        await pool.close()


async def test_the_fire_reads_run_again_prepare_nothing_new(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True, warm=warm_fire_reads)
    try:
        async with pool.connection() as conn:
            before = await _count_prepared(conn)
            await warm_fire_reads(conn)  # the same statements again: nothing new to prepare
            assert await _count_prepared(conn) == before
    finally:
        await pool.close()


async def _count_prepared(conn: AsyncConnection[Any]) -> int:
    row = await (await conn.execute("SELECT count(*) AS n FROM pg_prepared_statements")).fetchone()
    assert row is not None
    return int(row["n"])
