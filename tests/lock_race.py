"""Two writers raced at a chosen point, for lock-order tests on real PostgreSQL: a gate transaction holds one row,
the first writer starts and waits on it (its other rows taken), the second starts once the first waits, then the gate
lets go. Deterministic: a deadlock between the two, if their orders cross, is certain (SQLSTATE 40P01)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg

from tests.executor.conftest import rows
from tests.helpers import eventually

Writer = Callable[[], Coroutine[Any, Any, Any]]


def lock_waiters(db_url: str) -> int:
    """How many sessions of the test's database wait for a lock."""
    return int(rows(db_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()")[0][0])


async def race_at_gate(db_url: str, gate: str, first: Writer, second: Writer) -> list[str]:
    """``first`` held by a transaction that ran ``gate``, ``second`` started while it waits, then the gate let go;
    the SQLSTATE each one ended with ("" for none)."""
    async with await psycopg.AsyncConnection.connect(db_url) as gate_conn:
        async with gate_conn.transaction():
            await gate_conn.execute(gate)
            one = asyncio.create_task(first())
            await eventually(lambda: one.done() or lock_waiters(db_url) == 1)
            two = asyncio.create_task(second())
            await eventually(lambda: two.done() or lock_waiters(db_url) == 2)
        done = await asyncio.gather(one, two, return_exceptions=True)
    return [getattr(r, "sqlstate", "") or "" if isinstance(r, BaseException) else "" for r in done]
