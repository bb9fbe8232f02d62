"""Index writes lost with their replica: every subscription write queues the row's id in
``subscription_index_outbox`` in its own transaction (a trigger: migration 0831). A replica stopped or killed between a
commit and its index write leaves the entry behind in Redis; every replica sweeps the queue every
``sweep_interval_s`` and writes what Redis does not hold at the row's version (``tt:index:rowver``), so the
other replica (or the restarted one) mends it within seconds instead of at its next full pass.

Rows queued less than ``GRACE_S`` ago (counted from the write, not its commit) are left to the replica writing them
now (a sweep that meets a writer still at it writes nothing older than the index holds); a replica claims the rows
it sweeps (``SKIP LOCKED``), so two replicas do not write them twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg.rows import tuple_row

from common import hotindex
from services.control import sub_repo
from services.control.db import Database

GRACE_S = 0.5
BATCH = 1000
_PAUSE_S = 0.005  # between batches of a backlog: the sweep leaves most of the CPU to requests

_CLAIM = (
    "SELECT o.seq, s.id, s.version FROM subscription_index_outbox o"
    " LEFT JOIN subscriptions s ON s.id = o.subscription_id"
    " WHERE o.queued_at < clock_timestamp() - make_interval(secs => %(grace)s)"
    " ORDER BY o.seq LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED"
)
_DROP = "DELETE FROM subscription_index_outbox WHERE seq = ANY(%s)"


async def _behind(redis: Any, versions: dict[str, int]) -> list[str]:
    """The ids whose index entry is older than their row ``versions`` (or was never written)."""
    if not versions:
        return []
    ids = sorted(versions)
    held = await redis.hmget(hotindex.ROW_VERSIONS_KEY, ids)
    return [sid for sid, rv in zip(ids, held, strict=True) if rv is None or int(rv) < versions[sid]]


async def sweep(db: Database, redis: Any, write: Callable[[sub_repo.Stored], Awaitable[bool]], *,
                grace_s: float = GRACE_S, batch: int = BATCH) -> int:
    """Write the index entries of queued rows that Redis holds older than the row (``write``: under the row's leader
    lock, refused when older than the index), drop the rows swept; returns the entries written."""
    written = 0
    while True:
        async with db.transaction() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(_CLAIM, {"grace": grace_s, "limit": batch})
            claimed = await cur.fetchall()
            versions = {str(sid): int(version) for _, sid, version in claimed if sid is not None}
            behind = await _behind(redis, versions)
            if behind:
                for stored in await sub_repo.get_many(conn, behind):
                    written += await write(stored)
            if claimed:
                await conn.execute(_DROP, ([seq for seq, _, _ in claimed],))
        if len(claimed) < batch:
            return written
        await asyncio.sleep(_PAUSE_S)
