"""Background publishers: the trigger-event outbox → durable log, and the watched-asset set for ingest."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from common.marketstate import WATCH_CHANNEL, WATCH_TRIGGERS, change_watch_set, watch_diff
from common.streams import DurableLog
from services.guard.store import Clock, dict_pool
from services.guard.tasks import reraise_if_cancelled

log = logging.getLogger(__name__)


class Kicked:
    """A loop that runs ``step`` whenever kicked (coalescing kicks), retrying after ``retry_s`` on failure."""

    def __init__(self, name: str, retry_s: float = 0.5, min_interval_s: float = 0.0, delay_s: float = 0.0) -> None:
        self.name = name
        self.retry_s = retry_s
        self.min_interval_s = min_interval_s  # > 0: kicks within this long after a run wait and share the next one
        self.delay_s = delay_s  # > 0: a run starts this long after the kick (work made moot meanwhile is skipped)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def kick(self) -> None:
        """Ask for a run soon."""
        self._wake.set()
        self._idle.clear()

    async def step(self) -> None:
        """One run (overridden)."""

    async def drained(self) -> None:
        """Wait until no kick is pending (tests, shutdown)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            reraise_if_cancelled()  # redis-py can turn a cancel into a timeout it retries (a step's calls)
            await self._wake.wait()
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            self._wake.clear()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried; the loop must survive outages
                reraise_if_cancelled()
                log.warning(f"{self.name} failed; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            if not self._wake.is_set():
                self._idle.set()
            if self.min_interval_s > 0:
                await asyncio.sleep(self.min_interval_s)


# Reaches the old rows through guard_trigger_events_published: without it, every prune read the whole
# table (a day of events).
PRUNE = "DELETE FROM guard_trigger_events WHERE published_at < %s"


class OutboxPublisher(Kicked):
    """Appends unpublished ``guard_trigger_events`` rows to the durable log, in order, then marks them."""

    def __init__(self, pool: AsyncConnectionPool[Any], log_: DurableLog, clock: Clock, *, batch: int = 500,
                 keep_s: float = 86_400.0, prune_every: int = 1000, min_interval_s: float = 0.0) -> None:
        # Kicked by every fire, settle and hold: each run costs two PostgreSQL transactions and a Redis
        # append, so under load runs are spaced by ``min_interval_s`` and publish what gathered meanwhile.
        super().__init__("outbox publisher", min_interval_s=min_interval_s)
        self.pool = dict_pool(pool)
        self.log = log_
        self.clock = clock
        self.batch = batch
        self.keep_s = keep_s
        self.prune_every = prune_every
        self.published = 0
        self._steps = 0

    async def step(self) -> None:
        """Publish everything pending; now and then drop rows published more than ``keep_s`` ago."""
        self._steps += 1
        if (self._steps - 1) % self.prune_every == 0:  # the first step, then every prune_every
            async with self.pool.connection() as conn:
                await conn.execute(PRUNE, (self.clock() - timedelta(seconds=self.keep_s),))
        while True:
            async with self.pool.connection() as conn:
                rows = await (await conn.execute(
                    "SELECT seq, payload FROM guard_trigger_events WHERE published_at IS NULL ORDER BY seq LIMIT %s",
                    (self.batch,))).fetchall()
            if not rows:
                return
            await self.log.append_many([bytes(r["payload"]) for r in rows])
            async with self.pool.connection() as conn:
                await conn.execute("UPDATE guard_trigger_events SET published_at = %s WHERE seq = ANY(%s)",
                                   (self.clock(), [r["seq"] for r in rows]))
            self.published += len(rows)
            if len(rows) < self.batch:
                return


class WatchPublisher(Kicked):
    """Keeps ``tt:watch:triggers`` equal to the assets with armed triggers; announces changes to ingest."""

    def __init__(self, redis: Any, assets: Callable[[], set[str]], version: Callable[[], object] | None = None) -> None:
        super().__init__("watch publisher")
        self.redis = redis
        self.assets = assets
        self.version = version  # when given: a value that changes whenever the set may have (skips the diff)
        self.current: set[str] | None = None
        self._written: object = None

    async def step(self) -> None:
        """Write the difference (everything on the first run) and publish on ``tt:watch:changed``."""
        version = self.version() if self.version is not None else None
        if version is not None and self.current is not None and version == self._written:
            return  # kicked on every fire and order event: most leave the set as it was
        wanted = self.assets()
        if self.current is None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(WATCH_TRIGGERS)
            items = sorted(wanted)
            for start in range(0, len(items), 1000):
                pipe.sadd(WATCH_TRIGGERS, *items[start:start + 1000])
            pipe.publish(WATCH_CHANNEL, watch_diff(WATCH_TRIGGERS, reset=True))
            await pipe.execute()
            self.current, self._written = wanted, version
            return
        added, removed = wanted - self.current, self.current - wanted
        if not added and not removed:
            self._written = version
            return
        await change_watch_set(self.redis, WATCH_TRIGGERS, added, removed)
        self.current, self._written = wanted, version


class SubmittedMarker(Kicked):
    """Records, in batches, that the executor acknowledged SELLs (off the SELL's critical path)."""

    def __init__(self, mark: Callable[[list[tuple[str, str]]], Awaitable[None]], *,
                 min_interval_s: float = 0.0, delay_s: float = 0.0) -> None:
        # A mark that is late (or lost in a crash) only means one more, harmless, submission at start-up:
        # under load one UPDATE per ``min_interval_s`` instead of one per acknowledged SELL; and a SELL that
        # settles within ``delay_s`` (the settle records submitted_at) needs none at all.
        super().__init__("submitted marker", min_interval_s=min_interval_s, delay_s=delay_s)
        self.mark = mark
        self.pending: dict[str, str] = {}

    def add(self, trigger_id: str, order_id: str) -> None:
        """Queue one acknowledged SELL."""
        self.pending[trigger_id] = order_id
        self.kick()

    def discard(self, trigger_id: str, order_id: str) -> None:
        """Drop a queued mark that is already recorded (the SELL settled, which sets ``submitted_at``)."""
        if self.pending.get(trigger_id) == order_id:
            del self.pending[trigger_id]

    async def step(self) -> None:
        """Write everything queued."""
        while self.pending:
            batch, self.pending = self.pending, {}
            try:
                await self.mark(list(batch.items()))
            except BaseException:
                self.pending = {**batch, **self.pending}
                raise
