"""Background publishers (the ``Kickable`` port): the trigger-event outbox → durable log, and the watched-asset
set for ingest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from common.fastredis import FastRedis, append_events
from common.marketstate import WATCH_CHANNEL, WATCH_TRIGGERS, change_watch_set, watch_diff
from common.streams import DurableLog
from common.watchset import change_watch_set as change_watch_set_fast
from services.guard.adapters.trigger_store import Clock, dict_pool
from services.guard.loops import Kicked

# Reaches the old rows through guard_trigger_events_published: without it, every prune read the whole
# table (a day of events).
PRUNE = "DELETE FROM guard_trigger_events WHERE published_at < %s"


class OutboxPublisher(Kicked):
    """Appends unpublished ``guard_trigger_events`` rows to the durable log, in order, then marks them."""

    def __init__(self, pool: AsyncConnectionPool[Any], log_: DurableLog, clock: Clock, *, batch: int = 500,
                 keep_s: float = 86_400.0, prune_every: int = 1000, min_interval_s: float = 0.0,
                 yield_to: Callable[[], Awaitable[None]] | None = None, fast: FastRedis | None = None) -> None:
        # Kicked by every fire, settle and hold: each run costs two PostgreSQL transactions and a Redis
        # append, so under load runs are spaced by ``min_interval_s`` and publish what gathered meanwhile.
        super().__init__("outbox publisher", min_interval_s=min_interval_s, yield_to=yield_to)
        self.pool = dict_pool(pool)
        self.log = log_
        self.clock = clock
        self.batch = batch
        self.keep_s = keep_s
        self.prune_every = prune_every
        self.published = 0
        self._steps = 0
        # the same XADDs on a FastRedis connection when given: a run per fire, redis-py's pipeline cost more
        self.fast = fast

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
            payloads = [bytes(r["payload"]) for r in rows]
            if self.fast is None:
                await self.log.append_many(payloads)
            else:
                await append_events(self.fast, self.log, payloads)
            async with self.pool.connection() as conn:
                await conn.execute("UPDATE guard_trigger_events SET published_at = %s WHERE seq = ANY(%s)",
                                   (self.clock(), [r["seq"] for r in rows]))
            self.published += len(rows)
            if len(rows) < self.batch:
                return


class WatchPublisher(Kicked):
    """Keeps ``tt:watch:triggers`` equal to the assets with armed triggers; announces changes to ingest."""

    def __init__(self, redis: Any, assets: Callable[[], set[str]], version: Callable[[], object] | None = None, *,
                 yield_to: Callable[[], Awaitable[None]] | None = None, fast: FastRedis | None = None) -> None:
        super().__init__("watch publisher", yield_to=yield_to)
        self.redis = redis
        self.fast = fast  # the changes' MULTI on this pipelined connection when given (a fire may change the set)
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
        if self.fast is None:
            await change_watch_set(self.redis, WATCH_TRIGGERS, added, removed)
        else:
            await change_watch_set_fast(self.fast, WATCH_TRIGGERS, added, removed)
        self.current, self._written = wanted, version

