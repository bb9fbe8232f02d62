"""Reservation releases that Redis may not have: those of dead-lettered orders, which never run, and those Redis
lost after they were made (acknowledged writes not yet on disk or on the replica: ``appendfsync everysec`` loses
about the last second in a crash of its machine, a failover what the replica had not received).

The router reserves an order's exposure when it emits it and the executor releases it when the order is
terminal; an unreleased reservation never expires, so a release that never happens (or that Redis lost) keeps
the follower's headroom taken for good. PostgreSQL records a release as done (the order's ``order_pending`` row
deleted) ~0.1 s after it, long before Redis has it on disk, so what survives a crash is redone from two sources:

- while the executor runs, from memory: the releases of the last :data:`RECENT_RELEASES_S` are done again once the
  Redis server is seen to have changed (a restart, a failover);
- at the executor's start (its first repair pass, before the journal writes anything), from PostgreSQL, since a
  crash of the machine that runs both takes that memory with it: the releases of the orders that ended in the
  :data:`RECENT_RELEASES_S` before the last order end recorded (not before now: the executor may come back hours
  after the crash, and what Redis lost is what ended just before it). That end is the last one at or before the
  executor's start, so orders ending after it never move the window. A release of an order that ended long before
  (one the sweep made late, after a Redis outage) and was lost in the same second is not redone.

Releasing is idempotent, so redoing a release Redis kept changes nothing; the releases actually redone are counted
(:attr:`Repairs.redone`, :attr:`Repairs.redone_at_start`, ``executor.releases_redone``) and logged.

The orphans set (:data:`ORPHANS`) can lose its last entries in the same crash, but never alone: the consumer saves
its cursor past a dead-lettered trade only after the entry is added, on the same Redis, which keeps or loses its
writes in order; a lost entry comes with a lost cursor, so the trade is handled again (admitted, or dead-lettered
again). A trade dead-lettered just before a crash that lost its cursor's save is handed in again at the next start,
after that start's pass released its orphans: admission restores those reservations before the orders run
(:meth:`Repairs.take_orphans`). The journal's sweep runs :meth:`Repairs.run`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics

from common import reservations
from common.routed import ORPHANS as ORPHANS
from common.storage import redis_run_id
from services.executor.adapters.order_store import OrderStore
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

ORPHANS_PER_SWEEP = 1000
ORPHANS_REMEMBERED = 100_000  # orphans released, remembered in case their routed trade is handed in again...
ORPHANS_KEPT_S = 600.0  # ...for far longer than a routed order may wait to run (older: refused STALE_ORDER)
RECENT_RELEASES_S = 60.0  # releases done again after a Redis restart: far more than it can lose
REDO_CHUNK = 100  # releases per script (Redis runs it alone), as the journal's
AFTER_START, AFTER_SERVER_CHANGE = "start", "redis_server_change"  # executor.releases_redone's ``after``
Release = Callable[[Any, list[str]], Awaitable[list[int]]]

_REDONE = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.releases_redone",
    description="Reservation releases Redis had lost, done again: at the executor's start (after), or once the "
                "Redis server changed")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


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
    """Releases orphans, does the releases of the orders that ended last again at the executor's start, and the
    recent releases again when the Redis server changed (restart, failover).

    ``server_id`` names the Redis server (its ``run_id`` by default, new at every start and on a failover).
    ``started``: when the executor started (Unix seconds; now by default): the last order end recorded at or
    before it anchors the start's window, whatever ends after it. Releasing is idempotent: a release Redis kept is
    a no-op the second time.
    """

    def __init__(self, redis: Any, store: OrderStore, release: Release, *,
                 server_id: Callable[[], Awaitable[str]] | None = None,
                 clock: Callable[[], float] = time.monotonic, keep_s: float = RECENT_RELEASES_S,
                 started: float | None = None) -> None:
        self.redis = redis
        self.store = store
        self.release = release
        self.server_id = server_id or (lambda: redis_run_id(redis))
        self.clock = clock
        self.keep_s = keep_s
        self.started = datetime.fromtimestamp(time.time() if started is None else started, UTC)
        self.redone = 0  # releases done again after a Redis server change
        self.redone_at_start = 0  # releases done again at the start (of the orders that ended last)
        self.start_done = False  # the start's releases are done (a failed pass tries again at the next)
        self.server_changes = 0  # Redis servers seen to replace the one before (restart, failover)
        self._server = ""
        self._recent: deque[tuple[float, list[str]]] = deque()
        # orders whose reservations orphan passes released (they had no row), and those of the pass under way
        self._orphans_released: OrderedDict[str, float] = OrderedDict()  # → when remembered
        self._orphaning: frozenset[str] = frozenset()
        self._orphan_pass: asyncio.Event | None = None

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
        """One repair pass (the journal's sweep). The start's releases come last: a pass that fails there delays
        nothing else, and the next one tries again (orders that ended since the start do not move its window)."""
        await self._orphans()
        await self._restarted()
        if not self.start_done:
            await self._started()

    async def _redo(self, ids: list[str], after: str) -> int:
        """Release ``ids`` again (a script per :data:`REDO_CHUNK`); counts those that released anything (Redis
        had lost their release), as they are made."""
        redone = 0
        for start in range(0, len(ids), REDO_CHUNK):
            n = sum(1 for m in await self.release(self.redis, ids[start:start + REDO_CHUNK]) if m > 0)
            if n:
                redone += n
                _REDONE.add(n, {"after": after})
                if after == AFTER_START:
                    self.redone_at_start += n
                else:
                    self.redone += n
        return redone

    async def _started(self) -> None:
        """Redo the releases of the orders that ended in the :attr:`keep_s` before the last order end recorded at
        or before the start: a crash of the machine that runs Redis and the executor may have lost them in Redis
        after PostgreSQL recorded them (the memory of :meth:`released` went with the executor)."""
        last, ids = await self.store.last_ended(self.started, self.keep_s)
        redone = await self._redo(ids, AFTER_START)
        self.start_done = True
        if redone:
            log.warning("reservation releases redone at start: Redis had lost them",
                        extra={"released_again": redone, "orders": len(ids), "window_s": self.keep_s,
                               "last_end": last.isoformat() if last else ""})
        elif last is not None:
            log.info("reservation releases of the last ended orders checked at start",
                     extra={"orders": len(ids), "window_s": self.keep_s, "last_end": last.isoformat()})

    async def _orphans(self) -> None:
        orphans = [_text(c) for c in await self.redis.srandmember(ORPHANS, ORPHANS_PER_SWEEP) or ()]
        if not orphans:
            return
        done = asyncio.Event()
        self._orphaning, self._orphan_pass = frozenset(orphans), done
        try:
            known = await self.store.known(orphans)  # a row means the order runs (or ran): its own path releases it
            never = [c for c in orphans if c not in known]
            if never:
                self.remember_orphans(never)  # before: a release that fails may still have been made
                released = await self.release(self.redis, never)
                log.warning("reservations of dead-lettered orders released",
                            extra={"orders": len(never), "released": sum(1 for m in released if m > 0)})
            await self.redis.srem(ORPHANS, *orphans)
        finally:
            self._orphaning = frozenset()
            done.set()

    async def restore(self, redis: Any, client_order_ids: list[str],
                      subscriptions: Mapping[str, str] | None = None) -> None:
        """Restore the reservations of those of ``client_order_ids`` (orders about to run) that :meth:`take_orphans`
        gives (a failure leaves them to restore at the next try); ``subscriptions``: each order's, for the router's
        SELL index (see :func:`reservations.restore_many`)."""
        taken = await self.take_orphans(client_order_ids)
        if not taken:
            return
        try:
            restored = await reservations.restore_many(redis, taken, subscriptions)
        except BaseException:
            self.remember_orphans(taken)
            raise
        log.warning("reservations of orphaned orders restored: their routed trade was handed in again",
                    extra={"orders": len(taken), "restored": sum(1 for m in restored if m > 0),
                           "client_order_id": taken[0]})

    def remember_orphans(self, client_order_ids: list[str]) -> None:
        """Orders whose reservations an orphan pass released (or may have), to restore should they run after all."""
        now = self.clock()
        for c in client_order_ids:
            self._orphans_released.pop(c, None)
            self._orphans_released[c] = now
        self._forget_orphans(now)

    def _forget_orphans(self, now: float) -> None:
        kept = self._orphans_released
        while kept and (len(kept) > ORPHANS_REMEMBERED or next(iter(kept.values())) < now - ORPHANS_KEPT_S):
            kept.popitem(last=False)

    def orphans_to_restore(self) -> bool:
        """Whether :meth:`take_orphans` may give any order (none is remembered, and no pass is under way, mostly)."""
        if self._orphans_released:
            self._forget_orphans(self.clock())
        return bool(self._orphans_released or self._orphaning)

    async def take_orphans(self, client_order_ids: Iterable[str]) -> list[str]:
        """Those of ``client_order_ids`` (orders about to run: admitted, not started) whose reservations an orphan
        pass of this process released, forgotten as such: they run after all, and their reservations are to be
        restored before they start (:func:`common.reservations.restore_many`). A pass under way that may release
        one of them is waited for (it may have read their rows before they were inserted)."""
        ids = list(client_order_ids)
        if not self.orphans_to_restore():
            return []
        if not self._orphaning.isdisjoint(ids) and self._orphan_pass is not None:
            await self._orphan_pass.wait()
        return [c for c in ids if self._orphans_released.pop(c, None) is not None]

    async def _restarted(self) -> None:
        server = await self.server_id()
        if self._server and server != self._server:
            self.server_changes += 1  # what else lived in that server's memory may be gone too (watch sets)
            self._forget_before(self.clock() - self.keep_s)
            ids = [c for _t, batch in self._recent for c in batch]
            redone = await self._redo(ids, AFTER_SERVER_CHANGE)
            log.warning("redis server changed: recent reservation releases done again",
                        extra={"orders": len(ids), "released_again": redone})
        self._server = server
