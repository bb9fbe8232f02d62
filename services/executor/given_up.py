"""Orders this process gave up on are taken up again after a pause, not left until the next start.

An order's runner gives up after five errors in a row (an unexpected exception of one of its steps), and the
status tracker stops querying a placed order after five failed queries in a row. Until then such an order stayed
as it was until the executor's next start: its reservation held the follower's headroom, its position's settlement
waited for it (a position with an order in flight is not settled), and a SELL sized after it waited in its queue.
:class:`GivenUp` remembers each one and, :attr:`retry_s` later, resumes those still not terminal from PostgreSQL, as
a start does (a SUBMITTING one is settled by query, never sent blindly again). An order given up on again waits
again: its errors are logged each time, and nothing is lost by waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import metrics

from common.cancel import reraise_if_cancelling

log = logging.getLogger(__name__)

RETRY_S = 60.0  # a given-up order's errors were five in a row: a pause, then a fresh start of its runner
_RETRIED = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.orders_taken_up_again",
    description="Orders the executor had given up on (runner or status-query errors), resumed after a pause")


class GivenUp:
    """The orders given up on (by client order id, with when each is due), resumed by :meth:`retry_due`.

    ``rows_of`` reads the stored rows of the orders among the given ids that are not terminal; ``resume`` resumes
    such rows (the order runner's ``resume``, which skips the orders it already runs)."""

    def __init__(self, rows_of: Callable[[list[str]], Awaitable[list[dict[str, Any]]]],
                 resume: Callable[[list[dict[str, Any]]], Awaitable[int]], *, retry_s: float = RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rows_of = rows_of
        self.resume = resume
        self.retry_s = retry_s
        self.clock = clock
        self.given_up = 0  # orders given up on
        self.retried = 0  # orders resumed again
        self._due: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._due)

    def add(self, client_order_id: str) -> None:
        """An order was given up on: resume it :attr:`retry_s` from now, unless it ended by then."""
        self.given_up += 1
        self._due[client_order_id] = self.clock() + self.retry_s

    async def retry_due(self) -> int:
        """Resume the orders due that are still not terminal; returns how many were resumed."""
        now = self.clock()
        due = [coid for coid, at in self._due.items() if at <= now]
        if not due:
            return 0
        rows = await self.rows_of(due)
        resumed = await self.resume(rows) if rows else 0
        for coid in due:
            self._due.pop(coid, None)
        if resumed:
            self.retried += resumed
            _RETRIED.add(resumed)
            log.warning("orders given up on are taken up again",
                        extra={"orders": resumed, "ended_meanwhile": len(due) - len(rows)})
        return resumed

    async def run(self, interval_s: float | None = None) -> None:
        """:meth:`retry_due` every ``interval_s`` (a quarter of :attr:`retry_s` by default) until cancelled."""
        every = interval_s if interval_s is not None else self.retry_s / 4
        while True:
            await asyncio.sleep(every)
            try:
                await self.retry_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # the orders stay due: the next round tries again
                reraise_if_cancelling()
                log.exception("taking up orders given up on failed")
