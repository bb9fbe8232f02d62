"""The newest ARMED triggers, for the sweep of those nobody announced (``services.guard.unwatched``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

# A probe of the partial index triggers_armed_created (migration 0833): the rows of the last minute or so.
CREATED = "SELECT id FROM triggers WHERE state = 'ARMED' AND create_time >= %s AND create_time < %s"


class RecentArmed:
    """:class:`~services.guard.ports.RecentlyArmed` on PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def created(self, since: datetime, until: datetime) -> list[str]:
        """Ids of the ARMED triggers created at ``since`` or later, before ``until``."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)  # ids alone: a fan-out's thousands of exits are read a few times
            await cur.execute(CREATED, (since, until), prepare=True)
            return [r[0] for r in await cur.fetchall()]
