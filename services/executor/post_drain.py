"""Graceful stop of the order runners: once draining no POST starts (its order stays SUBMITTING, unsent, as after a
crash before the POST); the POSTs already at the venue get the grace period to be answered and their answer
written; then every runner is cancelled (its order resumes at the next start)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.executor.order_runner import OrderRunner

log = logging.getLogger(__name__)


class PostDrain:
    """Which orders have a POST at the venue whose answer is not written yet, and whether POSTs may start."""

    def __init__(self) -> None:
        self.draining = False
        self._at_venue: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._at_venue)

    async def may_post(self) -> None:
        """Return at once unless draining; then never (the runner is cancelled by :func:`close_runners`). Awaited
        right before a POST, with nothing awaited between it and the POST."""
        if self.draining:
            await asyncio.get_running_loop().create_future()

    def sent(self, client_order_id: str) -> None:
        """The order's POST is going out: its answer is waited for at a stop until :meth:`written`."""
        self._at_venue.add(client_order_id)
        self._idle.clear()

    def written(self, client_order_id: str) -> None:
        """The order's state after its POST is written (or its runner ended): no longer waited for."""
        self._at_venue.discard(client_order_id)
        if not self._at_venue:
            self._idle.set()

    async def answered(self, timeout_s: float) -> bool:
        """Wait until no POST is at the venue unwritten, ``timeout_s`` at most; True when none is."""
        if timeout_s > 0 and self._at_venue:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self._at_venue


async def close_runners(runner: OrderRunner, grace_s: float) -> None:
    """Stop POSTs, give those at the venue ``grace_s`` to be answered and written, then cancel every runner and
    close the tracker."""
    drain = runner.drain
    drain.draining = True
    runner.burst.starved()  # answers kept unread for a burst's POSTs still to go (none will) are read now
    at_venue = len(drain)
    if at_venue and grace_s > 0:
        log.info("stopping: waiting for the answers of POSTs at the venue",
                 extra={"at_venue": at_venue, "grace_s": grace_s})
    if not await drain.answered(grace_s):
        log.warning("stopping: POSTs still unanswered after the grace period; their orders are settled by status "
                    "query at the next start", extra={"at_venue": len(drain), "grace_s": grace_s})
    running = list(runner.tasks.values())
    for t in running:
        t.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await runner.tracker.close()
