"""Write-behind journal: batches state changes into one PostgreSQL transaction, then publishes.

Callers await durability (the commit). Transactions start at most every ``min_interval_s`` under load, so the changes
of the orders that moved meanwhile share one (a lone change after a quiet spell is written at once). After each commit
the journal appends the new OrderEvents to ``tt:stream:order_events``, keeps ``tt:watch:positions`` in step with
opened/closed positions and releases the reserved exposure of orders that became terminal (one Lua call); the outbox
marks (published, released) follow in one coalesced statement. Anything the post-commit step could not do is picked up
by a sweep from PostgreSQL, so a crash or a Redis outage delays events and releases but never drops them. Until the
outbox is known to hold nothing unappended (at start, after a failed append or a commit whose answer was lost), a
commit's events go out through it, oldest first (after a failed append, at the sweep's pace: an outage costs no outbox
read per commit), so an order's events stay in order. An appended event leaves the outbox only once Redis can no
longer lose it (``event_hold``).

The watch set is repaired from PostgreSQL too (:meth:`Journal.repair_watch`): at start, after a failed post-commit
update of it or a commit whose fills are unknown, after a Redis server change, and every ``watch_repair_interval_s``.
It then holds exactly the assets some wallet holds (``positions.size > 0``), so ingest follows every open position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from common.cancel import reraise_if_cancelling
from common.marketstate import WATCH_POSITIONS, change_watch_set
from common.streams import DurableLog
from services.executor.adapters.order_store import Change, OrderStore
from services.executor.domain.fill_math import Booked
from services.executor.event_hold import EVENTS_DURABLE_AFTER_S, EventHold
from services.executor.releases import Release, Repairs

log = logging.getLogger(__name__)

# Releases a script (Redis runs it alone): in 10,000-follower runs 500 held it up to 22 ms, 100 up to 6 ms.
RELEASE_CHUNK = 100
OUTBOX_READ = 5000  # outbox rows read at most at once
MARKS_INTERVAL_S = 0.1
WATCH_REPAIR_INTERVAL_S = 30.0


@dataclass
class _Batch:
    inserts: list[Change]
    changes: list[Change]
    done: asyncio.Future[set[str]]
    urgent: bool = False


@dataclass
class JournalStats:
    """Counters."""

    commits: int = 0
    changes: int = 0
    published: int = 0
    released: int = 0
    errors: int = 0
    errors_list: list[str] = field(default_factory=list)
    watch_repairs: int = 0  # repairs of the watch set from PostgreSQL
    watch_added: int = 0  # assets the repairs added (held, but missing from the set)
    watch_removed: int = 0  # assets the repairs removed (in the set, held by no wallet)


class Journal:
    """Single writer of order state; run :meth:`run` as a task."""

    def __init__(self, store: OrderStore, redis: Any, events_log: DurableLog, release: Release, *,
                 max_batch: int = 1000, sweep_interval_s: float = 2.0, min_interval_s: float = 0.0,
                 append: Callable[[list[bytes]], Awaitable[list[str]]] | None = None,
                 server_id: Callable[[], Awaitable[str]] | None = None,
                 watch_repair_interval_s: float = WATCH_REPAIR_INTERVAL_S,
                 observe: Callable[[list[Change]], None] | None = None,
                 durable_after_s: float = EVENTS_DURABLE_AFTER_S,
                 change_watch: Callable[[set[str], set[str]], Awaitable[None]] | None = None) -> None:
        """``observe`` learns every change once it is committed (quick, it must not raise); ``durable_after_s``: how
        long an appended event stays in the outbox (see the module); ``change_watch``: how the watch set changes."""
        self.store = store
        self.change_watch = change_watch or (lambda added, gone: change_watch_set(redis, WATCH_POSITIONS, added, gone))
        self.redis = redis
        self.events_log = events_log
        self.append = append or events_log.append_many  # how a commit's events reach the log
        self.release = release
        self.observe = observe
        self.repairs = Repairs(redis, store, release, server_id=server_id)
        self.max_batch = max_batch
        self.sweep_interval_s = sweep_interval_s
        self.min_interval_s = min_interval_s  # under load, between transaction starts (see the module)
        self._last_flush = float("-inf")
        self._urgent = asyncio.Event()
        self.queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self.stats = JournalStats()
        # published / released ids recorded in PostgreSQL by one coalesced statement off the write path
        self._marks_published: list[str] = []
        self._marking: set[str] = set()  # published marks being recorded now
        self._sweep_reads = 0  # outbox reads of the sweep in flight
        self._marked_during_read: set[str] = set()  # published marks recorded while one was in flight
        self._marks_released: list[str] = []
        self._marks_due = asyncio.Event()
        self.held = EventHold(store, events_log.append_many, self.repairs.server_id, durable_after_s=durable_after_s)
        # the watch set is repaired from PostgreSQL at the first sweep, when due, and when marked stale
        self.watch_repair_interval_s = watch_repair_interval_s
        self._watch_stale = True
        self._watch_repaired_at = float("-inf")
        self._server_changes = 0
        # None: in step; else when a commit may publish its outbox from (the sweep meanwhile: see the module)
        self._behind: float | None = 0.0

    async def write(self, changes: list[Change], inserts: list[Change] | None = None, *,
                    urgent: bool = False) -> set[str]:
        """Persist ``changes`` (updates of existing orders) and ``inserts`` (orders refused before any
        venue call, inserted unless they already exist). Returns the ids inserted now. ``urgent``
        (someone waits for the outcome, e.g. a SubmitOrder call) skips the ``min_interval_s`` wait."""
        fut: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Batch(inserts or [], changes, fut, urgent))
        if urgent:
            self._urgent.set()
        return await fut

    async def run(self) -> None:
        """Flush batches until cancelled; sweep the outbox and releases when idle."""
        with contextlib.suppress(Exception):  # unknown: the first check after the hold only records it
            self.held.server = await self.repairs.server_id()
        await self._safe_sweep(min_age_s=0.0)  # a storage blip here must not end the only writer of order state
        marker = asyncio.create_task(self._run_marks(), name="journal-marks")
        try:
            await self._run_batches()
        finally:
            marker.cancel()
            await asyncio.wait({marker}, timeout=1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush_marks(), timeout=2.0)

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            reraise_if_cancelling()  # redis-py can turn a cancel into a timeout it retries (the sweep's calls)
            # the sweep runs under steady load too: a release that failed after its commit must not wait
            if loop.time() - swept >= self.sweep_interval_s:
                await self._safe_sweep()
                swept = loop.time()
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=self.sweep_interval_s)
            except TimeoutError:
                continue
            if self.min_interval_s > 0:
                wait = self._last_flush + self.min_interval_s - loop.time()
                if wait > 0 and not first.urgent:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._urgent.wait(), timeout=wait)
                self._urgent.clear()
                self._last_flush = loop.time()
            batches = [first]
            size = len(first.changes) + len(first.inserts)
            while not self.queue.empty() and size < self.max_batch:
                b = self.queue.get_nowait()
                batches.append(b)
                size += len(b.changes) + len(b.inserts)
            await self._flush(batches)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until everything queued so far is written; used at shutdown."""
        fut: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Batch([], [], fut))
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(fut, timeout=timeout_s)

    async def _flush(self, batches: list[_Batch]) -> None:
        inserts = [c for b in batches for c in b.inserts]
        changes = [c for b in batches for c in b.changes]
        try:
            inserted, booked = await self._apply_with_retry(inserts, changes)
        except Exception as exc:
            if len(batches) == 1:
                self.stats.errors += 1
                log.exception("journal write failed")
                if not batches[0].done.done():
                    batches[0].done.set_exception(exc)
                return
            for b in batches:
                await self._flush([b])
            return
        self.stats.commits += 1
        self.stats.changes += len(changes) + len(inserted)
        for b in batches:
            if not b.done.done():
                b.done.set_result({c.life.client_order_id for c in b.inserts} & inserted)
        await self._after_commit([c for c in inserts if c.life.client_order_id in inserted] + changes, booked)

    async def _apply_with_retry(self, inserts: list[Change], changes: list[Change]) -> tuple[set[str], list[Booked]]:
        """After an outage error the commit may have gone through: what it booked or left in the outbox is unknown."""
        delay = 0.05
        for attempt in range(8):
            try:
                return await self.store.apply(inserts, changes)
            except (psycopg.OperationalError, psycopg.errors.SerializationFailure,
                    psycopg.errors.DeadlockDetected) as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self._watch_stale, self._behind = True, self._behind or 0.0
                if attempt == 7:
                    raise
                log.warning("journal write retry", extra={"error": repr(exc)[:300], "attempt": attempt + 1})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def _after_commit(self, written: list[Change], booked: list[Booked]) -> None:
        if self.observe is not None:
            try:
                self.observe(written)
            except Exception:  # an observer never stops the journal
                log.exception("journal observer failed")
        events = [c.event for c in written if c.event is not None]
        loop = asyncio.get_running_loop()
        try:
            if self._behind is not None:  # this commit's events are in the outbox, after those still to go out
                if loop.time() >= self._behind:
                    await self._publish_outbox(0.0, self.append)
            elif events:
                await self.append([e.SerializeToString() for e in events])
                self._hold([e.event_id for e in events])
                self.stats.published += len(events)
        except Exception as exc:  # noqa: BLE001 - the sweep retries from PostgreSQL
            self._behind = loop.time() + self.sweep_interval_s
            self.stats.errors += 1
            log.warning("journal post-commit step failed; the sweep will retry", extra={"error": repr(exc)[:300]})
            await self._watch_or_mark(booked)  # the books of the positions are followed all the same
            return
        await self._watch_or_mark(booked)
        try:
            terminal = [c.life.client_order_id for c in written if c.life.terminal]
            if terminal:
                await self._release(terminal)
        except Exception as exc:  # noqa: BLE001 - the sweep retries from PostgreSQL
            self.stats.errors += 1
            log.warning("journal post-commit step failed; the sweep will retry", extra={"error": repr(exc)[:300]})

    async def _watch_or_mark(self, booked: list[Booked]) -> None:
        """:meth:`_watch`; when it fails, the next sweep repairs the watch set from PostgreSQL."""
        try:
            await self._watch(booked)
        except Exception as exc:  # noqa: BLE001 - repaired by the next sweep
            self._watch_stale = True
            self.stats.errors += 1
            log.warning("watch set not updated; the sweep will repair it", extra={"error": repr(exc)[:300]})

    async def _watch(self, booked: list[Booked]) -> None:
        opened = {b.ticket.order.asset_id for b in booked if b.effect.opened}
        closed = {b.ticket.order.asset_id for b in booked if b.effect.closed} - opened
        gone = closed - await self.store.held_assets(sorted(closed)) if closed else set()  # one query for them all
        if opened or gone:  # (another replica opening one of ``gone`` meanwhile: the periodic repair)
            await self.change_watch(opened, gone)

    async def repair_watch(self) -> None:
        """Make ``tt:watch:positions`` the assets some wallet holds in PostgreSQL; announce the difference. Safe
        beside other replicas' post-commit updates: the set is read before PostgreSQL, so an asset a replica adds
        after opening a position is in PostgreSQL already (kept) or not in what was read (not removed); what is
        removed is checked again and added back when a wallet holds it by then (opened between query and removal).
        """
        members = {m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(WATCH_POSITIONS)}
        held = await self.store.held_assets()
        missing, extra = held - members, members - held
        if missing or extra:
            await change_watch_set(self.redis, WATCH_POSITIONS, missing, extra)
        back = await self.store.held_assets(sorted(extra)) if extra else set()
        if back:
            await change_watch_set(self.redis, WATCH_POSITIONS, back, ())
        self.stats.watch_repairs += 1
        self.stats.watch_added += len(missing)
        self.stats.watch_removed += len(extra - back)
        if missing or extra - back:
            log.warning("watch set repaired from PostgreSQL",
                        extra={"added": len(missing), "removed": len(extra - back), "held": len(held)})

    async def _repair_watch_if_due(self) -> None:
        """:meth:`repair_watch` when marked stale, after a Redis server change, or when due; a failure leaves it due."""
        now = asyncio.get_running_loop().time()
        changes = self.repairs.server_changes
        if not (self._watch_stale or changes != self._server_changes
                or now - self._watch_repaired_at >= self.watch_repair_interval_s):
            return
        self._watch_stale = False  # set again by a post-commit failure during the repair
        try:
            await self.repair_watch()
        except Exception as exc:  # noqa: BLE001 - retried at the next sweep
            self._watch_stale = True
            log.warning("watch set repair failed", extra={"error": repr(exc)[:300]})
            return
        self._watch_repaired_at = now
        self._server_changes = changes

    async def _release(self, ids: list[str]) -> None:
        ok: list[str] = []
        for start in range(0, len(ids), RELEASE_CHUNK):
            chunk = ids[start:start + RELEASE_CHUNK]
            try:
                results = await self.release(self.redis, chunk)
            except Exception as exc:  # noqa: BLE001 - the sweep retries them
                log.warning("reservation release failed", extra={"orders": len(chunk), "error": repr(exc)[:300]})
                continue
            for c, micro in zip(chunk, results, strict=True):
                if micro < 0:
                    log.error("unreadable reservation record left in place", extra={"client_order_id": c})
                else:
                    ok.append(c)
        self._marks_released += ok
        self.repairs.released(ok)
        self._marks_due.set()
        self.stats.released += len(ok)

    def _hold(self, event_ids: list[str]) -> None:
        """Keep appended events in the outbox until they are durable in Redis (``event_hold``)."""
        if event_ids:
            self.held.hold(event_ids, asyncio.get_running_loop().time())
            self._marks_due.set()

    async def flush_marks(self) -> None:
        """Record published events and released reservations (one statement for everything pending)."""
        published, self._marks_published = self._marks_published, []
        released, self._marks_released = self._marks_released, []
        if not published and not released:
            return
        self._marking.update(published)
        try:
            await self.store.mark_done(published, released)
        except Exception:
            self._marks_published[:0] = published
            self._marks_released[:0] = released
            raise
        else:
            if self._sweep_reads:
                self._marked_during_read.update(published)
        finally:
            self._marking.difference_update(published)

    async def _run_marks(self) -> None:
        """Coalesce marks: while one runs, the next gather. A crash before a mark only means the sweep publishes or
        releases again (both idempotent downstream)."""
        loop = asyncio.get_running_loop()
        while True:
            reraise_if_cancelling()
            due = self.held.due_in(loop.time())  # until the oldest held event is due, or new marks
            if due is None:
                await self._marks_due.wait()
            elif due > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._marks_due.wait(), timeout=due)
            await asyncio.sleep(MARKS_INTERVAL_S)  # gather more: one statement per interval at most
            self._marks_due.clear()
            try:
                self._marks_published += await self.held.settle(loop.time())
                await self.flush_marks()
            except Exception as exc:  # noqa: BLE001 - kept and retried
                log.warning("journal marks not recorded; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(0.5)
                self._marks_due.set()

    async def _safe_sweep(self, min_age_s: float | None = None) -> None:
        try:
            await self.sweep(min_age_s=self.sweep_interval_s if min_age_s is None else min_age_s)
        except Exception as exc:  # noqa: BLE001 - retried at the next idle moment
            log.warning("journal sweep failed", extra={"error": repr(exc)[:300]})

    async def _publish_outbox(self, min_age_s: float, append: Callable[[list[bytes]], Awaitable[list[str]]]) -> int:
        """Append the outbox rows no append took care of (all while behind), oldest first, and hold them; not what is
        in hand after the read (held, settled, being marked) or was marked during it (a mark's commit ends it)."""
        behind = self._behind is not None
        if not self._sweep_reads:
            self._marked_during_read.clear()
        self._sweep_reads += 1
        try:
            rows = await self.store.unpublished(0.0 if behind else min_age_s, OUTBOX_READ)
        finally:
            self._sweep_reads -= 1
        skip = self.held.ids | self._marking | set(self._marks_published) | self._marked_during_read
        pending = [row for row in rows if row[1] not in skip]
        if pending:
            await append([payload for _seq, _id, payload in pending])
            self._hold([event_id for _seq, event_id, _payload in pending])
            self.stats.published += len(pending)
        if behind and len(rows) < OUTBOX_READ:
            self._behind = None  # in step: what commits next can go out on its own
        return len(pending)

    async def sweep(self, *, min_age_s: float) -> None:
        """Repair the watch set when due; publish outbox events and release reservations the post-commit step missed."""
        await self._repair_watch_if_due()  # first: a failing step below must not hold it up
        await self.flush_marks()  # so the sweep does not redo what is done but not yet recorded
        if published := await self._publish_outbox(min_age_s, self.events_log.append_many):
            log.info("outbox events published by sweep", extra={"count": published})
        ids = await self.store.unreleased(min_age_s)
        if ids:
            await self._release(ids)
        await self.repairs.run()
