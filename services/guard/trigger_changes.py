"""Keeping the engine in line with PostgreSQL: one trigger at a time (the ``tt:triggers:changed`` notifications of
control and of the other guards of a rollout, through :class:`~services.guard.trigger_sync.TriggerSync`, and the
triggers a fire hands back unrecorded, and those armed elsewhere that nobody announced: ``unwatched``), or all of
them (a resync).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from common.decimals import ZERO
from common.heap import freeze_bulk_load
from common.retry import Backoff
from services.guard.domain.trigger_model import Kind, Reason, State, TriggerSpec, live_mark
from services.guard.domain.trigger_rows import TriggerRow
from services.guard.loops import reraise_if_cancelled

if TYPE_CHECKING:
    from services.guard.coordinator import Guard

log = logging.getLogger(__name__)


class TriggerChanges:
    """Applies trigger changes made elsewhere to the coordinator's engine (PostgreSQL is the source of truth)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._rng = random.Random()
        self.rearming = 0  # re-arms under way that carry marks not saved yet (the mark flush's cursor waits)
        self.rearms = 0  # re-arms ever started

    async def reload(self, trigger_id: str, *, observed: bool = True, mark: Decimal = ZERO) -> None:
        """Bring one trigger in line with PostgreSQL (a ``tt:triggers:changed`` notification); ``observed``
        records an event for a change made elsewhere; ``mark``: a trailing high-water mark this process
        tracked and PostgreSQL may not have yet (kept when higher than the row's and at least its activation
        price, and saved; below an activation price a PATCH raised, it is dropped)."""
        guard = self.guard
        guard.stats.reloads += 1
        if trigger_id in guard.firer.in_flight:
            return
        row = (await self._read([trigger_id], many=False)).get(trigger_id)
        if trigger_id in guard.firer.in_flight:
            return
        known = guard.engine.get(trigger_id)
        try:  # the engine changes before the writes below: the publishers are kicked whether or not those fail
            if row is not None and row.state is State.ARMED:
                spec = row.spec()
                raised = (spec.kind is Kind.TRAILING_STOP
                          and live_mark(mark, spec.activation_price) > spec.high_water_mark)
                if raised:
                    spec = spec.with_mark(mark)
                self._arm(spec, row)  # before any other await: what is armed is what was read last
                if raised:
                    await guard.store.save_marks([(mark, [spec.id])])
                if observed:  # a row at its first version was created, not changed: a repeated notice is no PATCH
                    updated = known is not None and row.version > 1
                    await guard.store.record_observed(row, "UPDATED" if updated else "ARMED",
                                                      Reason.UPDATED.value if updated else Reason.ARMED.value)
            elif known is not None:
                guard.engine.remove(trigger_id)
                if observed and row is not None and row.state is State.CANCELLED:
                    await guard.store.record_observed(row, "CANCELLED",
                                                      row.state_reason or Reason.CANCELLED_BY_USER.value)
        finally:
            guard.outbox.kick()
            guard.watch.kick()

    async def reload_many(self, trigger_ids: list[str], *, chunk: int = 1000) -> None:
        """:meth:`reload` of many triggers (no event recorded, no mark given), read ``chunk`` at a time: a resync
        after a fan-out has thousands of copy exits to read again, and the notices wait behind it."""
        guard = self.guard
        try:  # a later chunk's read may fail: the earlier chunks' changes are published all the same
            for start in range(0, len(trigger_ids), chunk):
                part = [tid for tid in trigger_ids[start:start + chunk] if tid not in guard.firer.in_flight]
                guard.stats.reloads += len(part)
                rows = await self._read(part) if part else {}
                for tid in part:
                    row = rows.get(tid)
                    if tid in guard.firer.in_flight:
                        continue
                    if row is not None and row.state is State.ARMED:
                        self._arm(row.spec(), row)
                    elif guard.engine.get(tid) is not None:
                        guard.engine.remove(tid)
        finally:
            guard.outbox.kick()
            guard.watch.kick()

    async def sweep_unwatched(self, read: Callable[[], Awaitable[list[str]]]) -> int:
        """Arm the ARMED triggers ``read`` lists that the engine lacks, though nothing here took them out of it while
        they were read (armed by another process that never announced them: ``unwatched``); returns how many."""
        guard = self.guard
        with guard.engine.noting() as touched:
            ids = await read()
        missing = [tid for tid in ids if tid not in guard.engine and tid not in touched]
        if missing:
            log.warning("armed triggers nobody announced: watching them", extra={"count": len(missing)})
            await self.reload_many(missing)
        return len(missing)

    async def _read(self, trigger_ids: list[str], *, many: bool = True) -> dict[str, TriggerRow]:
        """The rows of ``trigger_ids`` (those not found left out), each read after the engine's last change of it:
        one another path armed, changed or dropped while it was read (a notice's reload, a fire's re-arm, a copy
        exit's cancel) is read again, so an older answer never replaces what that path put in the engine."""
        store = self.guard.store
        rows: dict[str, TriggerRow] = {}
        wanted = trigger_ids
        while wanted:
            with self.guard.engine.noting() as touched:
                if many:
                    answer = await store.get_many(wanted)
                else:
                    one = await store.get(wanted[0])
                    answer = {} if one is None else {wanted[0]: one}
            for tid in wanted:
                rows.pop(tid, None)
                if tid in answer:
                    rows[tid] = answer[tid]
            wanted = [tid for tid in wanted if tid in touched]
        return rows

    def _arm(self, spec: TriggerSpec, row: TriggerRow) -> None:
        """Watch ``spec`` (of ``row``), held when the row says its book is stale (a trailing stop's tracked mark is
        kept when higher: ``Engine.upsert``)."""
        guard = self.guard
        guard.engine.upsert(spec, armed_ns=guard.clock_ns())
        if row.state_reason == Reason.BOOK_STALE.value:
            guard.engine.mark_held([spec.id])
        guard.changed(row.asset_id)

    async def resync(self) -> tuple[int, int]:
        """Make the engine equal to PostgreSQL's ARMED triggers; returns (added or changed, removed).

        A trigger the engine took, changed or dropped while the snapshot was read (a copy fill's exits, a fire)
        is not taken from the snapshot, which may predate that change, but read again afterwards
        (:meth:`reload_many`).
        A trailing mark stored higher than the engine's (saved by another guard: the old process of a rollout)
        is taken, and the assets whose marks rose are evaluated again on their stored books."""
        guard = self.guard
        guard.stats.resyncs += 1
        engine = guard.engine
        with engine.noting() as touched:
            specs = await guard.store.load_armed()
        busy = set(guard.firer.in_flight) | touched
        wanted = {s.id: s for s in specs if s.id not in busy}
        removed = 0
        for tid in engine.ids() - wanted.keys() - busy:
            engine.remove(tid)
            removed += 1
        changed = 0
        risen: set[str] = set()
        for tid, spec in wanted.items():
            current = engine.get(tid)
            if current is None or current.with_mark(ZERO) != spec.with_mark(ZERO):
                engine.upsert(spec, armed_ns=guard.clock_ns())
            elif (spec.kind is Kind.TRAILING_STOP
                  and live_mark(spec.high_water_mark, spec.activation_price) > current.high_water_mark):
                engine.upsert(spec)  # the same trigger: armed when it was
                risen.add(spec.asset_id)
            else:
                continue
            guard.changed(spec.asset_id)
            changed += 1
        if changed or removed:
            log.info("triggers resynced",
                     extra={"changed": changed, "removed": removed, "assets_marks_risen": len(risen)})
            guard.watch.kick()
        freeze_bulk_load(changed)  # thousands of triggers at once: out of the collector's scans from now on
        await self.reload_many(sorted(touched))
        if risen:
            guard.books_read(risen, guard.clock_ns())  # marks stored by another guard, from prices it read
            guard.spawn(guard.recheck(*sorted(risen)))
        return changed, removed

    def rearm(self, trigger_ids: list[str], recheck_asset: str = "",
              marks: Mapping[str, Decimal] | None = None) -> None:
        """Reload triggers a fire took out of the engine without recording them (retried until PostgreSQL
        answers); with ``recheck_asset``, evaluate that asset's stored book again after ``defer_s``.
        ``marks``: the trailing high-water marks they had in the engine (PostgreSQL's may lag behind:
        marks are saved every few seconds), so a re-armed trailing stop keeps its level."""
        if trigger_ids:
            self.rearming += 1
            self.rearms += 1
            self.guard.spawn(self._rearm(list(trigger_ids), recheck_asset, dict(marks or {})))

    async def _rearm(self, trigger_ids: list[str], recheck_asset: str, marks: dict[str, Decimal]) -> None:
        try:
            await self._rearm_until_done(trigger_ids, recheck_asset, marks)
        finally:
            self.rearming -= 1

    async def _rearm_until_done(self, trigger_ids: list[str], recheck_asset: str, marks: dict[str, Decimal]) -> None:
        backoff = Backoff(0.1, 5.0)
        for attempt in range(1_000_000):
            try:
                for tid in trigger_ids:
                    await self.reload(tid, observed=False, mark=marks.get(tid, ZERO))
                if recheck_asset:
                    await asyncio.sleep(self.guard.defer_s)
                    await self.guard.recheck(recheck_asset)
                return
            except Exception as exc:  # noqa: BLE001 - PostgreSQL may be down; keep trying
                reraise_if_cancelled()
                log.warning("re-arm failed; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(backoff.delay(min(attempt, 8), self._rng.random()))
