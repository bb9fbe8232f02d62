"""The intent INSERT of single orders on a dedicated connection, as a bare prepared statement.

Every routed trade costs one intent INSERT before its POST. Through a pooled connection and a
psycopg cursor that is a pool checkout, a cursor, query conversion, parameter dumping, the
prepared-statement bookkeeping and a row factory, around a single round trip: several hundred
microseconds of Python. Here the statement is prepared once per connection and executed with
libpq's ``PQsendQueryPrepared`` on a connection this module owns; the result's columns are read
directly. Same statement, same all-or-nothing semantics (one statement in autocommit).

The connection serves one small insert at a time (:data:`.order_store.DEDICATED_MAX_INTENTS`); an insert
arriving while it is busy, and a fan-out's chunks, go through the pool instead, so nothing queues
behind it.
Any error closes the connection (the next insert opens a new one) and is raised as psycopg raises
it: ``psycopg.OperationalError`` when the server could not be reached, which callers retry.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import generators, pq

from common.storage import checked_result, named

STATEMENT = b"tt_executor_insert_intents"


class IntentConnection:
    """One autocommit connection executing the prepared intent INSERT (``$1`` = the intents' JSON)."""

    def __init__(self, url: str, sql: str, *, connect_timeout_s: float = 5.0, options: str = "") -> None:
        self.url = url
        self.options = options
        self.sql = sql.replace("%s", "$1").encode()
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[object] | None = None
        self.busy = False

    async def _connection(self) -> psycopg.AsyncConnection[object]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        kwargs: dict[str, Any] = named(self.url, "tt-executor-intents")
        if self.options:
            kwargs["options"] = self.options
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                     connect_timeout=max(1, int(self.connect_timeout_s)), **kwargs)
        try:
            conn.pgconn.send_prepare(STATEMENT, self.sql)
            checked_result(await conn.wait(generators.execute(conn.pgconn)), conn, pq.ExecStatus.COMMAND_OK)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def insert(self, payload: str) -> list[tuple[str | None, ...]]:
        """Run the INSERT with ``payload``; returns the rows it returned (text columns, None for NULL). One at a
        time: callers check :attr:`busy` first."""
        if self.busy:
            raise RuntimeError("the intent connection is busy")
        self.busy = True
        try:
            conn = await self._connection()
            try:
                conn.pgconn.send_query_prepared(STATEMENT, [payload.encode()])
                res = checked_result(await conn.wait(generators.execute(conn.pgconn)), conn, pq.ExecStatus.TUPLES_OK)
            except BaseException:
                # a failed or interrupted statement leaves the connection in an unknown state: start afresh
                self._conn = None
                await conn.close()
                raise
            return [tuple(None if (value := res.get_value(row, col)) is None else bytes(value).decode()
                          for col in range(res.nfields)) for row in range(res.ntuples)]
        finally:
            self.busy = False

    async def close(self) -> None:
        """Close the connection (a later insert opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
