"""What the check for lost routed trades (:mod:`services.router.relog`) reads and writes: the routed trades of
its window in PostgreSQL, which of their log entries the Redis server still has, and its run id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from common import reservations
from common.storage import redis_run_id

_APPENDED_SINCE = """
SELECT leader_trade_id, appended_cursor FROM routed_trades
WHERE routed_at > now() - make_interval(secs => %s) AND appended_cursor IS NOT NULL
ORDER BY routed_at, appended_at
"""
_PAYLOADS = "SELECT leader_trade_id, payload FROM routed_trades WHERE leader_trade_id = ANY(%s)"
# the executor's intents (its table; the router already reads its positions and fills)
_ADMITTED = "SELECT client_order_id FROM orders WHERE client_order_id = ANY(%s)"
_ENDED = "SELECT client_order_id FROM orders WHERE client_order_id = ANY(%s) AND terminal_at IS NOT NULL"
_REAPPENDED = """
UPDATE routed_trades r SET appended_cursor = u.cursor, appended_at = now()
FROM unnest(%s::text[], %s::text[]) AS u(lt, cursor) WHERE r.leader_trade_id = u.lt
"""
# 1 for each entry id the stream holds, 0 for one it does not (the payloads stay in Redis)
_PRESENT = """
local out = {}
for i, id in ipairs(ARGV) do
  out[i] = #redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1)
end
return out
"""
PRESENT_CHUNK = 1000


class RelogStore:
    """The routed trades of the check's window, and the executor's intents, in PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def appended_since(self, window_s: float) -> list[tuple[str, str]]:
        """(leader trade id, log cursor) of the trades routed in the last ``window_s``, in routing order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_APPENDED_SINCE, (window_s,))
            return [(r["leader_trade_id"], r["appended_cursor"]) for r in await cur.fetchall()]

    async def payloads(self, leader_trade_ids: Sequence[str]) -> dict[str, bytes]:
        """The serialized RoutedTrades of these leader trades."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PAYLOADS, (list(leader_trade_ids),))
            return {r["leader_trade_id"]: bytes(r["payload"]) for r in await cur.fetchall()}

    async def admitted(self, client_order_ids: Sequence[str]) -> set[str]:
        """Those of ``client_order_ids`` the executor holds an intent (or a refusal) for."""
        if not client_order_ids:
            return set()
        async with self.pool.connection() as conn:
            cur = await conn.execute(_ADMITTED, (list(client_order_ids),))
            return {r["client_order_id"] for r in await cur.fetchall()}

    async def ended(self, client_order_ids: Sequence[str]) -> set[str]:
        """Those of ``client_order_ids`` the executor ended (its order's final state is recorded)."""
        if not client_order_ids:
            return set()
        async with self.pool.connection() as conn:
            cur = await conn.execute(_ENDED, (list(client_order_ids),))
            return {r["client_order_id"] for r in await cur.fetchall()}

    async def reappended(self, items: Sequence[tuple[str, str]]) -> None:
        """Record the new log cursors of RoutedTrades appended again."""
        if items:
            async with self.pool.connection() as conn:
                await conn.execute(_REAPPENDED, ([lt for lt, _ in items], [c for _, c in items]))


class LogPresence:
    """Which entries a Redis stream holds, which Redis server answers (its run id), and the release of claims."""

    def __init__(self, redis: Any, stream: str) -> None:
        self.redis = redis
        self.stream = stream

    async def present(self, cursors: Sequence[str]) -> list[bool]:
        """For each cursor, whether the stream still has that entry."""
        out: list[bool] = []
        for start in range(0, len(cursors), PRESENT_CHUNK):
            chunk = list(cursors[start:start + PRESENT_CHUNK])
            flags = await self.redis.eval(_PRESENT, 1, self.stream, *chunk)
            out.extend(bool(int(f)) for f in flags)
        return out

    async def server_id(self) -> str:
        """The run id of the Redis server (new at each of its starts, and another server's after a failover)."""
        return await redis_run_id(self.redis)

    async def release_claims(self, client_order_ids: Sequence[str]) -> int:
        """Release what these orders' claims reserve (one released before is left as it is); how many held any."""
        return sum(1 for m in await reservations.release_many(self.redis, list(client_order_ids)) if m > 0)
