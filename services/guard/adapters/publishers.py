"""Background publishers (the ``Kickable`` port): the trigger-event outbox → durable log, and the watched-asset
set for ingest."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from common.fastredis import FastRedis, append_events
from common.marketstate import WATCH_CHANNEL, WATCH_TRIGGERS, change_watch_set, watch_diff
from common.streams import DurableLog
from common.watchset import change_watch_set as change_watch_set_fast
from services.guard.adapters.trigger_store import Clock, dict_pool
from services.guard.loops import Kicked

log = logging.getLogger(__name__)

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


class WatchedAssets(Protocol):
    """The assets with armed triggers, as the engine keeps them (``services.guard.domain.trigger_index.Engine``)."""

    @property
    def assets_version(self) -> tuple[int, int]:
        """(the engine's own number, a count of its asset-set changes)."""

    def assets(self) -> set[str]:
        """A copy of the whole set."""

    def take_asset_changes(self) -> list[str]:
        """Assets that joined or left the set since the last call."""

    def watches(self, asset_id: str) -> bool:
        """Whether ``asset_id`` is in the set now."""


class WatchPublisher(Kicked):
    """Keeps ``tt:watch:triggers`` equal to the assets with armed triggers; announces changes to ingest.

    Only the assets the engine reports changed are compared (a fire that takes an asset's last trigger is one
    asset, not a copy of every watched one); another engine (a reload) is compared whole. An asset whose state in
    Redis is not known is written again whatever this publisher wrote before: those of a write that failed (it may
    have been applied all the same, its reply lost), and those :meth:`verify` finds missing (Redis lost its last
    writes in a crash, or something else wrote the key). Assets in Redis this publisher did not write are left: in
    a rollout they are the other guard's."""

    def __init__(self, redis: Any, engine: Callable[[], WatchedAssets], *,
                 yield_to: Callable[[], Awaitable[None]] | None = None, fast: FastRedis | None = None) -> None:
        super().__init__("watch publisher", yield_to=yield_to)
        self.redis = redis
        self.fast = fast  # the changes' MULTI on this pipelined connection when given (a fire may change the set)
        self.engine = engine
        self.current: set[str] | None = None
        self._written: tuple[int, int] | None = None  # the engine's assets_version the set last matched
        self._pending: set[str] = set()  # assets taken from the engine's changes, not written yet
        self._unsure: set[str] = set()  # assets whose state in Redis is not known: written again, added or removed
        self._verify = False  # the next run first compares the set in Redis with what was written
        self.repairs = 0  # runs that found assets written missing from the set in Redis

    def verify(self) -> None:
        """Ask the next run to compare the set in Redis with what this publisher wrote (periodic: the executor's
        ``repair_watch`` does the same for the positions' set)."""
        self._verify = True
        self.kick()

    async def step(self) -> None:
        """Write the difference (everything on the first run) and publish on ``tt:watch:changed``."""
        engine = self.engine()
        version = engine.assets_version
        if self._verify and self.current is not None:
            members = {m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(WATCH_TRIGGERS)}
            self._verify = False  # (a read that failed leaves it asked for: the retry reads again)
            missing = self.current - members
            if missing:
                self.repairs += 1
                log.warning("watch set in Redis lacks assets guard wrote: writing them again",
                            extra={"missing": len(missing)})
                self._unsure |= missing
        current = self.current
        if current is not None and version == self._written and not self._unsure:
            return  # kicked on every fire and order event: most leave the set as it was
        self._pending.update(engine.take_asset_changes())
        if current is None:
            wanted = engine.assets()
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(WATCH_TRIGGERS)
            items = sorted(wanted)
            for start in range(0, len(items), 1000):
                pipe.sadd(WATCH_TRIGGERS, *items[start:start + 1000])
            pipe.publish(WATCH_CHANNEL, watch_diff(WATCH_TRIGGERS, reset=True))
            await pipe.execute()
            self.current, self._written = wanted, version
            self._pending.clear()
            self._unsure.clear()
            return
        unsure = self._unsure
        if self._written is None or version[0] != self._written[0]:  # another engine: compared whole
            wanted = engine.assets()
            added = (wanted - current) | (unsure & wanted)
            removed = (current - wanted) | (unsure - wanted)
        else:
            watches = engine.watches
            added = {a for a in self._pending | unsure if (a in unsure or a not in current) and watches(a)}
            removed = {a for a in self._pending | unsure if (a in unsure or a in current) and not watches(a)}
        if added or removed:
            try:
                if self.fast is None:
                    await change_watch_set(self.redis, WATCH_TRIGGERS, added, removed)
                else:
                    await change_watch_set_fast(self.fast, WATCH_TRIGGERS, added, removed)
            except BaseException:
                self._unsure |= added | removed  # applied or not: a set thought to hold A never gets A again
                raise
            current.update(added)
            current.difference_update(removed)
        self._written = version
        self._pending.clear()
        self._unsure.difference_update(added | removed)
