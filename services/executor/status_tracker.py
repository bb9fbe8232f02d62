"""Placed orders polled until the venue says they are final, by one scheduler for all of them.

A placed order waits for its next status query in a heap of due times, not in a sleeping task of its
own: it costs its ticket and state rather than a task, a context and a stack of coroutine frames (about
10 KB an order). Tens of thousands wait at once when a backlog drains or the chain confirms slowly.
Queries run as short tasks, at most ``max_concurrent`` at a time, soonest due first. While a query
changes nothing the delay to the next one doubles from ``initial_s`` up to ``max_s``; after a change
it starts again at ``initial_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.executor.domain.order_lifecycle import OrderLife
from services.executor.domain.ticket import Ticket

log = logging.getLogger(__name__)

# One status query of a placed order: the order's state after it, and whether it changed.
Poll = Callable[[Ticket, OrderLife], Awaitable[tuple[OrderLife, bool]]]

ERROR_BACKOFF_S = 0.5  # after a failure: 2 x this, doubling per failure in a row
ERROR_BACKOFF_MAX_S = 30.0


def next_delay(delay_s: float, *, changed: bool, initial_s: float, max_s: float) -> float:
    """Seconds to the next status query of an order after one that took ``delay_s``: ``initial_s`` again
    after a change, else twice as long, at most ``max_s``."""
    return initial_s if changed else min(delay_s * 2, max_s)


def error_delay(errors: int, base_s: float) -> float:
    """Seconds before trying an order again after ``errors`` failures in a row (doubling, at most 30 s); the
    runners' submit and settle steps back off the same way."""
    return min(ERROR_BACKOFF_MAX_S, base_s * 2 ** errors)


@dataclass(slots=True)
class _Tracked:
    ticket: Ticket
    life: OrderLife
    delay_s: float
    errors: int = 0
    due_seq: int = -1  # its one live entry in the heap: any other (left by a discard) is skipped


class Tracker:
    """Schedules the status queries of every placed order of this process; run by :meth:`add`."""

    def __init__(self, poll: Poll, *, initial_s: float, max_s: float, max_concurrent: int = 256,
                 max_errors: int = 5, error_backoff_s: float = ERROR_BACKOFF_S,
                 on_drop: Callable[[Ticket], object] | None = None) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.poll = poll
        self.initial_s = initial_s
        self.max_s = max_s
        self.max_errors = max_errors
        self.error_backoff_s = error_backoff_s
        self.on_drop = on_drop  # called with an order given up on (it resumes at the next start)
        self._orders: dict[str, _Tracked] = {}
        self._due: list[tuple[float, int, str]] = []  # (due, seq, client order id); an order polls on its due_seq only
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._polls: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    def __len__(self) -> int:
        return len(self._orders)

    def add(self, ticket: Ticket, life: OrderLife) -> None:
        """Track a placed order: its first status query is due ``initial_s`` from now."""
        coid = ticket.client_order_id
        if coid in self._orders or life.terminal:
            return
        self._orders[coid] = _Tracked(ticket, life, self.initial_s)
        self._schedule(coid, self.initial_s)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="order-tracker")

    async def discard(self, client_order_id: str) -> None:
        """Stop querying one order (ended elsewhere); a query of it in flight ends first."""
        self._orders.pop(client_order_id, None)
        polls = [p for p in self._polls if p.get_name() == f"order-poll:{client_order_id}"]
        if polls:
            await asyncio.wait(polls)

    async def close(self) -> None:
        """Stop querying (the orders stay non-terminal in PostgreSQL and resume at the next start)."""
        tasks = [t for t in (self._runner, *self._polls) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runner = None
        self._orders.clear()
        self._due.clear()

    def _schedule(self, coid: str, delay_s: float) -> None:
        entry = self._orders.get(coid)
        if entry is None:
            return
        due, seq = time.monotonic() + delay_s, next(self._seq)
        entry.due_seq = seq
        if not self._due or due < self._due[0][0]:
            self._wake.set()
        heapq.heappush(self._due, (due, seq, coid))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait_s = self._due[0][0] - time.monotonic() if self._due else None
            if wait_s is None or wait_s > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                continue
            _due, seq, coid = heapq.heappop(self._due)
            entry = self._orders.get(coid)
            if entry is None or entry.due_seq != seq:  # discarded, or tracked anew with an entry of its own
                continue
            await self._slots.acquire()
            if self._orders.get(coid) is not entry:  # discarded (or tracked anew) while it waited for the slot
                self._slots.release()
                continue
            task = loop.create_task(self._query(coid, entry), name=f"order-poll:{coid}")
            self._polls.add(task)
            task.add_done_callback(self._polls.discard)

    async def _query(self, coid: str, entry: _Tracked) -> None:
        try:
            try:
                life, changed = await self.poll(entry.ticket, entry.life)
            finally:
                self._slots.release()
        except asyncio.CancelledError:
            raise
        except Exception:
            entry.errors += 1
            log.exception("order status query failed", extra={"client_order_id": coid,
                                                               "state": entry.life.state.value,
                                                               "attempt": entry.errors})
            if self._orders.get(coid) is not entry:  # discarded under the query
                return
            if entry.errors >= self.max_errors:
                log.error("stopped tracking the order; it resumes at the next start",
                          extra={"client_order_id": coid})
                self._orders.pop(coid, None)
                if self.on_drop is not None:
                    self.on_drop(entry.ticket)
                return
            self._schedule(coid, error_delay(entry.errors, self.error_backoff_s))
            return
        entry.errors = 0
        entry.life = life
        if self._orders.get(coid) is not entry:  # discarded under the query (tracked anew or not): not ours
            return
        if life.terminal:
            self._orders.pop(coid, None)
            return
        entry.delay_s = next_delay(entry.delay_s, changed=changed, initial_s=self.initial_s, max_s=self.max_s)
        self._schedule(coid, entry.delay_s)
