"""PostgreSQL access for the control service: the pool and transaction helpers."""

from __future__ import annotations

import select
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from common.storage import named, pipelined_transaction

Conn = AsyncConnection[DictRow]

# A connection checked out of the pool is trusted without a round trip when its socket has nothing to
# read: PostgreSQL says goodbye (an error message, then EOF) to every connection when it stops or
# restarts, so a dead connection shows up as a readable socket and gets the full check. The pool
# hands connections out in turn, so at a low request rate every checkout would otherwise look "idle"
# and pay a round trip. One unused for longer than TRUST_QUIET_S is checked anyway.
TRUST_QUIET_S = 30.0
_returned_at: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()


async def _stamp_return(conn: Conn) -> None:
    _returned_at[conn] = time.monotonic()


def _quiet(conn: Conn) -> bool:
    """True when the connection's socket has nothing waiting (no goodbye, no EOF)."""
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


async def _check_if_idle(conn: Conn) -> None:
    returned = _returned_at.get(conn)
    if returned is not None and time.monotonic() - returned <= TRUST_QUIET_S and _quiet(conn):
        return
    await AsyncConnectionPool.check_connection(conn)


async def create_pool(url: str, *, max_size: int, acquire_timeout_s: float,
                      statement_timeout_s: float) -> AsyncConnectionPool[Conn]:
    """An open pool that checks idle connections on checkout, so a restarted PostgreSQL heals at once.

    Unlike ``common.storage.create_pool`` it validates suspect connections (one empty round trip), bounds
    statement and lock waits, so an outage surfaces as UNAVAILABLE instead of a hang, and runs in
    autocommit: single reads cost no BEGIN/COMMIT; writes use explicit transactions.
    """
    ms = max(1, int(statement_timeout_s * 1000))
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        timeout=acquire_timeout_s,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": max(1, int(acquire_timeout_s)),
                **named(url, "tt-control"),
                "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"},
        check=_check_if_idle,
        reset=_stamp_return,
        open=False,
        reconnect_timeout=0,
        name="control",
    )
    await pool.open(wait=False)
    return pool


class Database:
    """Transactions over the pool. Errors propagate; ``errors.status_for`` maps outages to UNAVAILABLE."""

    def __init__(self, pool: AsyncConnectionPool[Conn]) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One read-write transaction in pipeline mode: committed on success, rolled back on any error.

        Statements are queued and sent together; fetching a result (or leaving the block) sends what
        is queued, so BEGIN rides with the first read and the writes with COMMIT. Errors of queued
        statements surface at the next fetch or when the block ends. Use ``RETURNING`` + fetch, not
        ``rowcount``, when a result decides what happens next.
        """
        async with self.pool.connection() as conn, pipelined_transaction(conn):
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        """A connection for reads (autocommit: each statement sees the latest committed data)."""
        async with self.pool.connection() as conn:
            yield conn

    async def ping(self, timeout_s: float) -> None:
        """Run ``SELECT 1``; raises when PostgreSQL cannot be reached within ``timeout_s``."""
        async with self.pool.connection(timeout=timeout_s) as conn:
            await conn.execute("SELECT 1")
