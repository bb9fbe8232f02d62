"""``common.storage.pipelined_transaction`` on real PostgreSQL: all or nothing, in as few round trips as its reads
need."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from common.storage import create_pool, pipelined_transaction

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[Any]:
    """An autocommit pool of one connection (the block's connection is the one checked afterwards) and a table."""
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE tx_probe (id int PRIMARY KEY)")
    yield pool
    await pool.close()


async def ids(pool: Any) -> list[int]:
    """The probe table's ids, and a check that the connection was handed back outside any transaction."""
    async with pool.connection() as conn:
        assert conn.info.transaction_status is pq.TransactionStatus.IDLE
        rows = await (await conn.execute("SELECT id FROM tx_probe ORDER BY id")).fetchall()
    return [r["id"] for r in rows]


def exchanges(trace: str) -> int:
    """How many times the client sent and then waited for the server's answer in a libpq protocol trace."""
    directions = [line.split("\t", 1)[0] for line in trace.splitlines() if line[:2] in ("F\t", "B\t")]
    return sum(1 for before, after in itertools.pairwise(directions) if (before, after) == ("F", "B"))


async def test_statements_commit_together(pool: Any) -> None:
    async with pool.connection() as conn, pipelined_transaction(conn):
        await conn.execute("INSERT INTO tx_probe VALUES (1)")
        seen = await (await conn.execute("SELECT count(*) AS n FROM tx_probe")).fetchone()
        await conn.execute("INSERT INTO tx_probe VALUES (2)")
    assert seen["n"] == 1
    assert await ids(pool) == [1, 2]


async def test_an_exception_in_the_block_rolls_everything_back(pool: Any) -> None:
    with pytest.raises(RuntimeError):
        async with pool.connection() as conn, pipelined_transaction(conn):
            await conn.execute("INSERT INTO tx_probe VALUES (1)")
            await (await conn.execute("SELECT 1")).fetchone()
            await conn.execute("INSERT INTO tx_probe VALUES (2)")
            raise RuntimeError("caller gave up")
    assert await ids(pool) == []


@pytest.mark.parametrize("fetched", [True, False], ids=["failure read in the block", "failure queued last"])
async def test_a_failing_statement_raises_and_rolls_back(pool: Any, fetched: bool) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO tx_probe VALUES (7)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pool.connection() as conn, pipelined_transaction(conn):
            await conn.execute("INSERT INTO tx_probe VALUES (1)")
            cur = await conn.execute("INSERT INTO tx_probe VALUES (7) RETURNING id")
            if fetched:
                await cur.fetchone()
    assert await ids(pool) == [7]


async def test_a_cancelled_block_rolls_back_and_the_connection_stays_usable(pool: Any) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        async with pool.connection() as conn, pipelined_transaction(conn):
            await conn.execute("INSERT INTO tx_probe VALUES (1)")
            started.set()
            await (await conn.execute("SELECT pg_sleep(5)")).fetchone()

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ids(pool) == []


async def test_begin_rides_with_the_first_read_and_commit_with_the_last_writes(pool: Any, tmp_path: Path) -> None:
    """Two exchanges with the server for a block with one read: psycopg's transaction() in a pipeline takes five."""
    trace_file = tmp_path / "libpq.trace"
    with trace_file.open("w") as out:
        async with pool.connection() as conn:
            conn.pgconn.trace(out.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                async with pipelined_transaction(conn):
                    await conn.execute("INSERT INTO tx_probe VALUES (1)")
                    await (await conn.execute("SELECT id FROM tx_probe")).fetchone()
                    await conn.execute("INSERT INTO tx_probe VALUES (2)")
            finally:
                conn.pgconn.untrace()
    assert exchanges(trace_file.read_text()) == 2
    assert await ids(pool) == [1, 2]
