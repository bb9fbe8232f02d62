"""Keeps Redis in line with PostgreSQL (the source of truth): the hot subscription index and trigger
change notifications.

- After a subscription commit, ``subscription_changed`` upserts / removes its index entry
  (``common.hotindex`` publishes the invalidation). Index writes happen under one lock and carry the
  row version just committed; a write older than one already made is dropped, so racing writers
  cannot leave a stale entry.
- ``resync`` diffs every leader's index hash against PostgreSQL and fixes only the differences; it
  runs at start-up and periodically, and sooner (``retry_interval_s``) after a failed update, so a
  Redis outage or a crash between commit and index update heals by itself.
- Trigger changes are published on ``tt:triggers:changed`` as ``{"triggerId","op","version"}`` with
  ``version`` = INCR ``tt:triggers:version``; a failed publish is retried by the same loop.

The index copy of a subscription carries no ``stats`` (they change with every fill).
Single writer assumed: with several control replicas a stale entry can live until the next resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from common import hotindex
from services.control import sub_repo
from services.control.db import Database
from services.control.errors import Unavailable, is_redis_outage, short_reason
from tradingtools.control.v1 import subscription_pb2 as spb

log = logging.getLogger(__name__)

TRIGGERS_CHANNEL = "tt:triggers:changed"
TRIGGERS_VERSION_KEY = "tt:triggers:version"
_LEADER_PREFIX = "tt:leader:"
_PUBLISH_TRIGGER = """
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], cjson.encode({triggerId=ARGV[2], op=ARGV[3], version=v}))
return v
"""


def index_copy(sub: spb.Subscription) -> spb.Subscription:
    """The subscription as stored in the hot index (no live stats)."""
    copy = spb.Subscription()
    copy.CopyFrom(sub)
    copy.ClearField("stats")
    return copy


@dataclass
class ResyncReport:
    """What one resync changed."""

    leaders: int = 0
    upserted: int = 0
    removed: int = 0
    triggers_published: int = 0


class IndexSync:
    """Writer of the Redis hot index and trigger notifications."""

    def __init__(self, db: Database, redis: Any, *, interval_s: float, retry_interval_s: float = 1.0) -> None:
        self.db = db
        self.redis = redis
        self.interval_s = interval_s
        self.retry_interval_s = retry_interval_s
        self.dirty = False
        self._dirty_event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pending_triggers: dict[str, str] = {}
        self._written: dict[str, int] = {}  # subscription id → highest row version written to the index

    async def ensure_redis(self) -> None:
        """Raise Unavailable unless Redis answers (checked before a mutation writes anything)."""
        try:
            await self.redis.ping()
        except Exception as exc:
            if is_redis_outage(exc):
                raise Unavailable(f"redis unavailable: {short_reason(exc)}") from exc
            raise

    async def subscription_changed(self, sub: spb.Subscription, version: int) -> None:
        """Bring one subscription's index entry in line with its committed ``version``; a failure marks
        the index dirty for the resync loop."""
        try:
            async with self._lock:
                await self._write(sub, version)
        except Exception as exc:  # noqa: BLE001 - committed already; the resync heals
            self.mark_dirty()
            log.warning("hot index update failed; resync will heal",
                        extra={"subscription_id": sub.id, "error": short_reason(exc)})

    async def _write(self, sub: spb.Subscription, version: int) -> bool:
        """Write one entry (caller holds the lock); False when a newer version was written already."""
        if self._written.get(sub.id, 0) > version:
            return False
        if sub.state == spb.SUBSCRIPTION_STATE_ACTIVE:
            await hotindex.upsert(self.redis, index_copy(sub))
        else:
            await hotindex.remove(self.redis, sub.leader_proxy, sub.id)
        self._written[sub.id] = version
        return True

    async def trigger_changed(self, trigger_id: str, op: str) -> None:
        """Publish a trigger change; a failure is retried by the resync loop."""
        try:
            await self._publish_trigger(trigger_id, op)
        except Exception as exc:  # noqa: BLE001 - committed already; retried later
            self._pending_triggers[trigger_id] = op
            self.mark_dirty()
            log.warning("trigger publish failed; will retry",
                        extra={"trigger_id": trigger_id, "error": short_reason(exc)})

    def mark_dirty(self) -> None:
        """Ask the loop for a resync soon (after ``retry_interval_s``)."""
        self.dirty = True
        self._dirty_event.set()

    async def _publish_trigger(self, trigger_id: str, op: str) -> int:
        return int(await self.redis.eval(_PUBLISH_TRIGGER, 1, TRIGGERS_VERSION_KEY, TRIGGERS_CHANNEL,
                                         trigger_id, op))

    async def resync(self) -> ResyncReport:
        """Make the index equal to PostgreSQL's ACTIVE subscriptions and flush pending publishes."""
        report = ResyncReport()
        async with self.db.read() as conn:
            wanted_leaders = await sub_repo.active_leaders(conn)
        indexed = await hotindex.leaders(self.redis)
        async for key in self.redis.scan_iter(match=_LEADER_PREFIX + "*", count=500):
            indexed.add(key.removeprefix(_LEADER_PREFIX))
        for leader in sorted(wanted_leaders | indexed):
            report.leaders += 1
            async with self._lock:
                await self._resync_leader(leader, report)
        for trigger_id, op in list(self._pending_triggers.items()):
            await self._publish_trigger(trigger_id, op)
            del self._pending_triggers[trigger_id]
            report.triggers_published += 1
        self.dirty = False
        if report.upserted or report.removed or report.triggers_published:
            log.info("hot index resynced", extra={"upserted": report.upserted, "removed": report.removed,
                                                  "triggers_published": report.triggers_published})
        return report

    async def _resync_leader(self, leader: str, report: ResyncReport) -> None:
        async with self.db.read() as conn:
            stored = await sub_repo.active_of_leader(conn, leader)
        wanted = {s.sub.id: (s, hotindex.encode(index_copy(s.sub))) for s in stored}
        actual: dict[str, str] = await self.redis.hgetall(hotindex.leader_key(leader))
        for sid in actual.keys() - wanted.keys():
            await hotindex.remove(self.redis, leader, sid)
            report.removed += 1
        for sid, (s, encoded) in wanted.items():
            if actual.get(sid) != encoded and await self._write(s.sub, s.version):
                report.upserted += 1
        if not wanted:
            await self.redis.srem(hotindex.LEADERS_KEY, leader)

    async def run(self, housekeeping: Callable[[], Awaitable[None]] | None = None) -> None:
        """Resync forever: every ``interval_s``, or ``retry_interval_s`` after a failure."""
        while True:
            try:
                await asyncio.wait_for(self._dirty_event.wait(), timeout=self.interval_s)
                await asyncio.sleep(self.retry_interval_s)
            except TimeoutError:
                pass
            self._dirty_event.clear()
            try:
                await self.resync()
                if housekeeping is not None:
                    await housekeeping()
            except Exception as exc:  # noqa: BLE001 - the loop must survive outages
                self.mark_dirty()
                log.warning("hot index resync failed", extra={"error": short_reason(exc)})
