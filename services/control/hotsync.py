"""Keeps Redis in line with PostgreSQL (the source of truth): the hot subscription index and trigger
change notifications.

- After a subscription commit, ``subscription_changed`` upserts / removes its index entry
  (``common.hotindex`` publishes the invalidation) before the call answers, so a caller that saw
  the 200 can count on the index holding it: a write that fails raises :class:`IndexNotWritten` (503; the
  change is committed, the call's retry writes it again, and so does the resync). The write is shielded from
  the call's cancellation (a client deadline or disconnect after the commit): it finishes on its own, and the
  resync is asked for in case it cannot. Index writes of one leader happen under that leader's lock (striped)
  and carry the row version just committed; Redis refuses a write older than the row version it holds for the
  subscription (``tt:index:rowver``), so racing writers, in this process or in another replica, cannot
  leave a stale entry. A refused write asks for the resync, which writes a refused row again under its lock
  whatever the index holds (after PostgreSQL lost commits, the index holds versions it never will).
- ``resync`` diffs every leader's index hash against PostgreSQL and fixes only the differences; it
  runs at start-up, sooner (``retry_interval_s``) after a failed update, every ``full_interval_s``,
  and whenever the periodic check (every ``interval_s``) finds that Redis is not the server the last
  clean pass wrote to (its ``run_id``: a restart may have reloaded an older state) or lost the marker
  that pass left (a flush). So a Redis outage heals by itself, and a steady index costs one round trip
  per period instead of a pass that reads every leader (~0.5 s at 6,500 leaders, much of it on the event
  loop that serves requests). It reads the ids and versions of all ACTIVE subscriptions in one query
  and, per batch of leader hashes, one script that returns each entry's SHA1 (not the ~1 KB strings
  themselves), and compares each with the digest of the string expected at that version (remembered
  when it was written or last checked); only a leader that differs (or is unknown) is re-read and
  fixed, under its lock.
- A replica stopped or killed between a commit and its index write: every subscription write is queued with its
  commit (``index_outbox``) until a replica sweeps it; every replica sweeps every ``sweep_interval_s`` and writes the
  entries Redis holds at an older version.
- Trigger changes are announced to guard (``trigger_notices``) after their commit; a failed publish is
  retried by the same loop, and so is the notice of a change whose call failed or was cancelled once it had
  written the change (its COMMIT may have gone through): :meth:`IndexSync.announcing`.

The index copy of a subscription carries no ``stats`` (they change with every fill).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from common import hotindex
from common.cancel import reraise_if_cancelling
from common.fastredis import FastRedis
from common.storage import redis_run_id
from services.control import index_outbox, sub_repo
from services.control.db import Database
from services.control.errors import Unavailable, is_redis_outage, outage_reason, short_reason
from services.control.index_calls import IndexNotWritten as IndexNotWritten
from services.control.index_calls import resync_if_cancelled as resync_if_cancelled
from services.control.index_entries import DIGESTS, digest, upsert_encoded
from services.control.index_entries import index_copy as index_copy
from services.control.trigger_notices import TRIGGERS_CHANNEL as TRIGGERS_CHANNEL
from services.control.trigger_notices import TRIGGERS_VERSION_KEY as TRIGGERS_VERSION_KEY
from services.control.trigger_notices import TriggerNotices
from tradingtools.control.v1 import subscription_pb2 as spb

log = logging.getLogger(__name__)

_LEADER_PREFIX = "tt:leader:"
SYNCED_KEY = "tt:index:synced"  # left by the last clean pass: its writer's token
_LOCK_STRIPES = 64
_RESYNC_BATCH = 128  # leader hashes read per pipelined round trip
# Pause between batches: the resync leaves most of the CPU to requests (~4 ms of work per batch).
_RESYNC_PAUSE_S = 0.005
T = TypeVar("T")


@dataclass
class ResyncReport:
    """What one resync changed."""

    leaders: int = 0
    reread: int = 0  # leaders not in line at first sight, re-read from PostgreSQL
    upserted: int = 0
    removed: int = 0
    triggers_published: int = 0


class IndexSync:
    """Writer of the Redis hot index and trigger notifications."""

    def __init__(self, db: Database, redis: Any, *, interval_s: float, retry_interval_s: float = 1.0,
                 full_interval_s: float = 600.0, sweep_interval_s: float = 1.0, hot: FastRedis) -> None:
        self.db = db
        self.redis = redis
        self.hot = hot  # the request path's PING and upserts
        self.interval_s = interval_s
        self.retry_interval_s = retry_interval_s
        self.full_interval_s = full_interval_s
        self.sweep_interval_s = sweep_interval_s
        self._sweep_failed = False
        self.dirty = False
        self.passes = 0  # full passes completed
        self._dirty_event = asyncio.Event()
        self._failures = 0  # mark_dirty calls: a pass during which one happened is not clean
        self._token = secrets.token_hex(8)
        self._synced: tuple[str, float] | None = None  # (Redis run_id, loop time) of the last clean pass
        self._locks = tuple(asyncio.Lock() for _ in range(_LOCK_STRIPES))
        self.notices = TriggerNotices(redis)
        self._written: dict[str, int] = {}  # subscription id → highest row version written to the index
        self._writes: set[asyncio.Future[Any]] = set()  # index writes whose caller was cancelled
        # subscription id → (row version, digest of its index string at that version): a memo of
        # ``hotindex.encode`` (a version's content never changes), so a resync need not re-encode.
        self._expected: dict[str, tuple[int, str]] = {}

    async def ensure_redis(self) -> None:
        """Raise Unavailable unless Redis answers (checked before a mutation writes anything)."""
        try:
            await self.hot.ensure_reachable()
        except Exception as exc:
            if is_redis_outage(exc):
                raise Unavailable(f"redis unavailable: {outage_reason(exc)}") from exc
            raise

    def _lock(self, leader: str) -> asyncio.Lock:
        """The lock serializing index writes of ``leader`` (a stripe shared with other leaders)."""
        return self._locks[hash(leader.lower()) % _LOCK_STRIPES]

    async def subscription_changed(self, sub: spb.Subscription, version: int, encoded: str | None = None) -> None:
        """Bring one subscription's index entry in line with its committed ``version``; a failure marks
        the index dirty for the resync loop and raises :class:`IndexNotWritten`. ``encoded`` is
        ``hotindex.encode(index_copy(sub))`` when the caller has it already. The caller's cancellation does not
        stop the write (see the module)."""
        failure = await self._shielded(self._changed(sub, version, encoded))
        if failure is not None:
            raise IndexNotWritten(f"redis unavailable: {failure}; subscription {sub.id} is changed but not in the "
                                  "copy index yet: retry the call")

    async def _shielded(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` to its end even if the caller is cancelled meanwhile (the resync is then asked for too:
        a shutdown may still stop it)."""
        task = asyncio.ensure_future(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.mark_dirty()
            raise

    async def _changed(self, sub: spb.Subscription, version: int, encoded: str | None) -> str | None:
        """None when the entry is in line (or a newer version stands); else why not (``outage_reason``'s words)."""
        try:
            async with self._lock(sub.leader_proxy):
                if not await self._write(sub, version, encoded):
                    self.mark_dirty()  # a newer version is written, or the index is ahead of PostgreSQL: see _force
        except Exception as exc:  # noqa: BLE001 - committed already; the resync heals
            self.mark_dirty()
            log.warning("hot index update failed; resync will heal",
                        extra={"subscription_id": sub.id, "error": short_reason(exc)})
            return outage_reason(exc)
        return None

    async def _write(self, sub: spb.Subscription, version: int, encoded: str | None = None,
                     force: bool = False) -> bool:
        """Write one entry (caller holds its leader's lock); False when a newer version was written already
        (by this process, or by another writer: Redis refuses it). ``force``: see :meth:`_force`."""
        if self._written.get(sub.id, 0) > version and not force:
            return False
        if sub.state == spb.SUBSCRIPTION_STATE_ACTIVE:
            if encoded is None:
                encoded = hotindex.encode(index_copy(sub))
            if await upsert_encoded(self.hot, sub, encoded, version, force) == hotindex.REFUSED:
                return False
            self._expected[sub.id] = (version, digest(encoded))
        else:
            if await hotindex.remove(self.redis, sub.leader_proxy, sub.id, version, force=force) == hotindex.REFUSED:
                return False
            self._expected.pop(sub.id, None)
        self._written[sub.id] = version
        return True

    @contextlib.asynccontextmanager
    async def announcing(self, op: str) -> AsyncIterator[list[str]]:
        """Announce the triggers whose ids the body lists (a transaction lists those it wrote, or found already
        as asked: perhaps the retry of a call cancelled after its COMMIT) once it ends. When it fails after
        listing them (cancelled during its COMMIT, which may have gone through), the resync loop does."""
        ids: list[str] = []
        try:
            yield ids
        except BaseException:
            if ids:
                self.notices.defer(ids, op)
                self.mark_dirty()
            raise
        if ids:
            await self.triggers_changed(ids, op)

    async def triggers_changed(self, trigger_ids: list[str], op: str) -> None:
        """Publish changes of several triggers, recorded as pending first so that the resync loop publishes
        whatever a failure or the caller's cancellation left."""
        self.notices.defer(trigger_ids, op)
        await self._shielded(self._publish_pending(trigger_ids, op))

    async def _publish_pending(self, trigger_ids: list[str], op: str) -> None:
        if not await self.notices.publish(trigger_ids, op):
            self.mark_dirty()

    def mark_dirty(self) -> None:
        """Ask the loop for a resync soon (after ``retry_interval_s``)."""
        self.dirty = True
        self._failures += 1
        self._synced = None
        self._dirty_event.set()

    async def in_line(self) -> bool:
        """Whether the index can be trusted without a pass: a clean pass ran within ``full_interval_s``,
        no update failed since, and Redis is the same server as then and still holds that pass's marker."""
        synced = self._synced
        if synced is None or asyncio.get_running_loop().time() - synced[1] >= self.full_interval_s:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.get(SYNCED_KEY)
            info, marker = await pipe.execute()
        return str(info["run_id"]) == synced[0] and marker == self._token

    async def tick(self) -> ResyncReport | None:
        """One period of the loop: a resync unless the index is :meth:`in_line` (never after a failed update)."""
        if not await self.in_line():
            return await self.resync()
        return None

    async def resync(self) -> ResyncReport:
        """Make the index equal to PostgreSQL's ACTIVE subscriptions and flush pending trigger notices (the
        first pass of a process bumps their version: see ``trigger_notices``)."""
        report = ResyncReport()
        failures = self._failures
        run_id = await redis_run_id(self.redis)
        started = asyncio.get_running_loop().time()
        async with self.db.read() as conn:
            versions = await sub_repo.active_versions(conn)
        wanted: dict[str, dict[str, int]] = {}
        for sid, leader, version in versions:
            wanted.setdefault(leader, {})[sid] = version
        members = await hotindex.leaders(self.redis)  # ingest follows exactly these
        indexed = set(members)
        async for key in self.redis.scan_iter(match=_LEADER_PREFIX + "*", count=500):
            indexed.add(key.removeprefix(_LEADER_PREFIX))
        leaders = sorted(wanted.keys() | indexed)
        for start in range(0, len(leaders), _RESYNC_BATCH):
            if start:
                await asyncio.sleep(_RESYNC_PAUSE_S)
            batch = leaders[start:start + _RESYNC_BATCH]
            rows = await self.redis.eval(DIGESTS, len(batch), *(hotindex.leader_key(leader) for leader in batch))
            for leader, row in zip(batch, rows, strict=True):
                report.leaders += 1
                digests = dict(zip(row[::2], row[1::2], strict=True))
                if leader in members and self._in_line(wanted.get(leader, {}), digests):
                    continue
                report.reread += 1
                async with self._lock(leader):
                    await self._resync_leader(leader, report)
        report.triggers_published = await self.notices.flush()
        self.dirty = False
        self.passes += 1
        if failures == self._failures:  # clean: no update failed meanwhile
            await self.redis.set(SYNCED_KEY, self._token)
            if await redis_run_id(self.redis) == run_id:  # the server did not restart during the pass
                self._synced = (run_id, started)
        if report.upserted or report.removed or report.triggers_published:
            log.info("hot index resynced", extra={"upserted": report.upserted, "removed": report.removed,
                                                  "triggers_published": report.triggers_published})
        return report

    def _in_line(self, wanted: dict[str, int], digests: dict[str, str]) -> bool:
        """True when a leader's index hash (``digests``: field → SHA1 of its value) holds exactly the
        ``wanted`` ids at the strings expected for their versions. Unknown expectations and empty
        leaders are never in line."""
        if not wanted or wanted.keys() != digests.keys():
            return False
        for sid, version in wanted.items():
            expected = self._expected.get(sid)
            if expected is None or expected[0] != version or expected[1] != digests[sid]:
                return False
        return True

    async def _resync_leader(self, leader: str, report: ResyncReport) -> None:
        """Re-read one leader from PostgreSQL and fix its index hash (caller holds the leader's lock)."""
        async with self.db.read() as conn:
            stored = await sub_repo.active_of_leader(conn, leader)
        wanted = {s.sub.id: (s, hotindex.encode(index_copy(s.sub))) for s in stored}
        for sid, (s, encoded) in wanted.items():
            self._expected[sid] = (s.version, digest(encoded))
        actual: dict[str, str] = await self.redis.hgetall(hotindex.leader_key(leader))
        gone = sorted(actual.keys() - wanted.keys())
        refused: list[str] = []
        if gone:
            async with self.db.read() as conn:
                versions = await sub_repo.row_versions(conn, gone)
            for sid in gone:
                version, active = versions.get(sid, (None, False))
                if active:  # made ACTIVE again since the read above (another replica): its write stands
                    continue
                # a replica's write newer than this read (a resume) is refused by Redis, not undone
                if await hotindex.remove(self.redis, leader, sid, version) != hotindex.REFUSED:
                    report.removed += 1
                else:
                    refused.append(sid)
        written = False
        for sid, (s, encoded) in wanted.items():
            if actual.get(sid) != encoded:
                if await self._write(s.sub, s.version, encoded):
                    report.upserted += 1
                    written = True
                else:
                    refused.append(sid)
        if refused:
            written = await self._force(refused, report) or written
        if not wanted:  # unless an entry stayed: another writer made it ACTIVE since the read above
            await hotindex.forget_leader(self.redis, leader)
        elif not written and not await self.redis.sismember(hotindex.LEADERS_KEY, leader):
            # the hash is right but the leader left the followed set (an evicted or deleted member): one
            # upsert puts it back and announces it, or ingest would never follow it again
            s, encoded = next(iter(wanted.values()))
            if await self._write(s.sub, s.version, encoded):
                report.upserted += 1

    async def _force(self, ids: list[str], report: ResyncReport) -> bool:
        """Write the rows whose index write was refused, whatever version the index holds, under the rows' locks (no
        newer version commits meanwhile). Mostly another writer wrote a newer version, written again; but after
        PostgreSQL lost commits (a restore, a failover) the index holds versions it would refuse the rows for until
        they caught up: a PAUSED one copied. True when an ACTIVE one was written."""
        active = False
        async with self.db.transaction() as conn:
            for s in await sub_repo.get_many(conn, ids, lock=True):
                if await self._write(s.sub, s.version, force=True):
                    is_active = s.sub.state == spb.SUBSCRIPTION_STATE_ACTIVE
                    report.upserted += is_active
                    report.removed += not is_active
                    active = active or is_active
        return active

    async def sweep(self) -> int:
        """Write the index entries of commits whose writer may have stopped before writing them (``index_outbox``)."""
        return await index_outbox.sweep(self.db, self.redis, self._rewrite)

    async def _rewrite(self, stored: sub_repo.Stored) -> bool:
        async with self._lock(stored.sub.leader_proxy):
            return await self._write(stored.sub, stored.version)

    async def run(self, housekeeping: Callable[[], Awaitable[None]] | None = None) -> None:
        """Keep the index in line forever: :meth:`sweep` every ``sweep_interval_s``, check every ``interval_s`` and
        resync when the check fails (see :meth:`in_line`), or ``retry_interval_s`` after a failure."""
        clock = asyncio.get_running_loop()
        check_at = clock.time() + self.interval_s
        while True:
            reraise_if_cancelling()  # redis-py can turn a cancel into a timeout it retries
            wait = max(0.0, min(self.sweep_interval_s, check_at - clock.time()))
            try:  # not wait_for: on 3.11 it drops a cancel that comes as the event is set (a stop's last mark_dirty)
                async with asyncio.timeout(wait):
                    await self._dirty_event.wait()
            except TimeoutError:
                due = clock.time() >= check_at
            else:
                await asyncio.sleep(self.retry_interval_s)
                due = True
            try:
                if due:
                    self._dirty_event.clear()
                    check_at = clock.time() + self.interval_s
                    await self.tick()
                    if housekeeping is not None:
                        await housekeeping()
            except Exception as exc:  # noqa: BLE001 - the loop must survive outages
                self.mark_dirty()
                log.warning("hot index resync failed", extra={"error": short_reason(exc)})
            await self._sweep_quietly()

    async def _sweep_quietly(self) -> None:
        """:meth:`sweep`; a failure leaves the queue as it was for the next sweep (logged once per outage)."""
        try:
            await self.sweep()
            self._sweep_failed = False
        except Exception as exc:  # noqa: BLE001 - the loop must survive outages
            if not self._sweep_failed:
                log.warning("hot index sweep failed; retried", extra={"error": short_reason(exc)})
            self._sweep_failed = True
