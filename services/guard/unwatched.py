"""The sweep of triggers ARMED in PostgreSQL that the engine does not watch though nobody took them out of it.

During a rollout each guard learns the copy exits the other registers or renews from its notices
(``adapters.guard_notices``) or by handling the same order event. The two share the order consumer's cursor: the
events the old guard handles after the new one's start-up load and before the new one's consumer reads that cursor
(or reads it again, reconnecting before it handled anything) are read by the old one only. An old guard that dies
between committing their exits and announcing them leaves them in PostgreSQL only, and no version moved for a
resync to find. Guard arms new rows only (a copy exit, a renewal), so each such trigger was created after the
load began: once the order consumer has read its cursor, then every ``trigger_check_s``, this sweep reads the ARMED
triggers created since its previous run's window and arms those the engine lacks. A window starts
:data:`MARGIN_S` before the previous one ended (a row carries its writer's clock, read before its commit) and ends
:data:`SETTLE_S` ago: a trigger whose notice is on its way (a fan-out's thousands) is not read twice. Its steady
cost is one probe of an index on the newest ARMED triggers (migration 0833).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from services.guard.loops import reraise_if_cancelled
from services.guard.ports import RecentlyArmed
from services.guard.trigger_changes import TriggerChanges

log = logging.getLogger(__name__)

MARGIN_S = 30.0  # a commit this late after its rows' clock (or a writer's clock this far behind) is still seen
SETTLE_S = 5.0  # the notice of a trigger armed this long ago has come, unless its sender died
_STARTED_POLL_S = 0.01


class UnwatchedSweep:
    """Arms the triggers created in the sweep's window that the engine lacks (see the module)."""

    def __init__(self, changes: TriggerChanges, armed: RecentlyArmed, clock: Callable[[], datetime], *,
                 margin_s: float = MARGIN_S, settle_s: float = SETTLE_S) -> None:
        self.changes = changes
        self.armed = armed
        self.clock = clock
        self.margin = timedelta(seconds=margin_s)
        self.settle = timedelta(seconds=settle_s)
        self.since = clock() - self.margin  # built before the start-up load: what is committed after it
        self.found = 0

    async def step(self) -> int:
        """One sweep; returns the triggers it armed."""
        since, until = self.since, self.clock() - self.settle
        found = await self.changes.sweep_unwatched(lambda: self.armed.created(since, until))
        self.since = max(since, until - self.margin)
        self.found += found
        return found

    async def run(self, interval_s: float, started: Callable[[], bool]) -> None:
        """Sweep once ``started()`` (the order consumer read its cursor; ``interval_s`` waited at most), then every
        ``interval_s``; a failed sweep is retried at the next (its window stays open)."""
        waited = 0.0
        while not started() and waited < interval_s:
            await asyncio.sleep(_STARTED_POLL_S)
            waited += _STARTED_POLL_S
        while True:
            try:
                await self.step()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL may be down: the next sweep covers this one's
                reraise_if_cancelled()
                log.warning("unwatched sweep failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(interval_s)
