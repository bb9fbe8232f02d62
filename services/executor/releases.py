"""Reservation releases that Redis may not have: those of dead-lettered orders, which never run, and those a
Redis restart or failover lost after they were made (acknowledged writes not yet on disk or on the replica).

The router reserves an order's exposure when it emits it and the executor releases it when the order is
terminal; an unreleased reservation never expires, so a release that never happens (or that Redis lost) keeps
the follower's headroom taken for good. The journal's sweep runs :meth:`Repairs.run`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from common.storage import redis_run_id
from services.executor.adapters.order_store import OrderStore
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

ORPHANS = "tt:executor:orphans"  # client order ids of dead-lettered routed trades
ORPHANS_PER_SWEEP = 1000
RECENT_RELEASES_S = 60.0  # releases done again after a Redis restart: far more than it can lose
Release = Callable[[Any, list[str]], Awaitable[list[int]]]


async def orphaned(redis: Any, client_order_ids: list[str]) -> None:
    """Record orders of a dead-lettered routed trade, for :meth:`Repairs.run` to release what they reserved."""
    if client_order_ids:
        await redis.sadd(ORPHANS, *client_order_ids)


def releasing_dead_letters(record: Callable[[str, epb.RoutedTrade, BaseException], Awaitable[None]],
                           redis: Any, forget: Callable[[epb.RoutedTrade], None] | None = None,
                           ) -> Callable[[str, epb.RoutedTrade, BaseException], Awaitable[None]]:
    """The consumer's dead-letter step for routed trades: ``record`` it, mark its orders :func:`orphaned`,
    and ``forget`` them (their places in the position queues: nothing will run them)."""
    async def dead_letter(cursor: str, routed: epb.RoutedTrade, error: BaseException) -> None:
        if forget is not None:
            forget(routed)
        await record(cursor, routed, error)
        await orphaned(redis, [o.client_order_id for o in routed.orders])

    return dead_letter


class Repairs:
    """Releases orphans, and does the recent releases again when the Redis server changed (restart, failover).

    ``server_id`` names the Redis server (its ``run_id`` by default, new at every start and on a failover).
    Releasing is idempotent: a release Redis kept is a no-op the second time.
    """

    def __init__(self, redis: Any, store: OrderStore, release: Release, *,
                 server_id: Callable[[], Awaitable[str]] | None = None,
                 clock: Callable[[], float] = time.monotonic, keep_s: float = RECENT_RELEASES_S) -> None:
        self.redis = redis
        self.store = store
        self.release = release
        self.server_id = server_id or (lambda: redis_run_id(redis))
        self.clock = clock
        self.keep_s = keep_s
        self.redone = 0
        self.server_changes = 0  # Redis servers seen to replace the one before (restart, failover)
        self._server = ""
        self._recent: deque[tuple[float, list[str]]] = deque()

    def released(self, client_order_ids: list[str]) -> None:
        """Remember releases just made (for :attr:`keep_s`)."""
        now = self.clock()
        if client_order_ids:
            self._recent.append((now, client_order_ids))
        self._forget_before(now - self.keep_s)

    def _forget_before(self, when: float) -> None:
        while self._recent and self._recent[0][0] < when:
            self._recent.popleft()

    async def run(self) -> None:
        """One repair pass (the journal's sweep)."""
        await self._orphans()
        await self._restarted()

    async def _orphans(self) -> None:
        orphans = await self.redis.srandmember(ORPHANS, ORPHANS_PER_SWEEP)
        if not orphans:
            return
        known = await self.store.known(orphans)  # a row means the order runs (or ran): its own path releases it
        never = [c for c in orphans if c not in known]
        if never:
            released = await self.release(self.redis, never)
            log.warning("reservations of dead-lettered orders released",
                        extra={"orders": len(never), "released": sum(1 for m in released if m > 0)})
        await self.redis.srem(ORPHANS, *orphans)

    async def _restarted(self) -> None:
        server = await self.server_id()
        if self._server and server != self._server:
            self.server_changes += 1  # what else lived in that server's memory may be gone too (watch sets)
            self._forget_before(self.clock() - self.keep_s)
            ids = [c for _t, batch in self._recent for c in batch]
            if ids:
                redone = await self.release(self.redis, ids)
                self.redone += sum(1 for m in redone if m > 0)
            log.warning("redis server changed: recent reservation releases done again",
                        extra={"orders": len(ids), "released_again": self.redone})
        self._server = server
