"""Background-work helpers: loops that never swallow a cancellation (:class:`Kicked`, a loop run on demand;
:class:`Batches`, items handled a batch at a time), a bounded stop of background tasks, and
:class:`FireWindow`, which lets the background loops wait while fires are under way.

Some client libraries turn a cancellation that arrives mid-call into an ordinary exception; a
retry loop that catches ``Exception`` would then run on as if nothing happened. Loops check
:func:`reraise_if_cancelled` in their error path, and :func:`stop_tasks` cancels again until the tasks end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from common.cancel import reraise_if_cancelling

T = TypeVar("T")

log = logging.getLogger(__name__)


# Raise CancelledError when the current task was asked to stop (call from an ``except Exception``).
reraise_if_cancelled = reraise_if_cancelling


class Batches(Generic[T]):
    """Items handled in batches, one batch at a time: what is added while a batch is handled (or within
    ``gather_s`` of the first item) goes into the next one. A failing ``handle`` ends the running task with
    its exception (``spawn`` decides what happens to it); the next :meth:`add` starts a new one."""

    def __init__(self, handle: Callable[[list[T]], Awaitable[None]],
                 spawn: Callable[[Coroutine[Any, Any, Any]], None], *, gather_s: float = 0.0) -> None:
        self.handle = handle
        self.spawn = spawn
        self.gather_s = gather_s
        self._pending: list[T] = []
        self._running = False

    def add(self, item: T) -> None:
        """Handle ``item`` with the next batch."""
        self._pending.append(item)
        if not self._running:
            self._running = True
            self.spawn(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                if self.gather_s > 0:
                    await asyncio.sleep(self.gather_s)
                batch, self._pending = self._pending, []
                await self.handle(batch)
        finally:
            self._running = False


class FireWindow:
    """Counts the fires under way, from the tick that decided them until their SELL is answered.

    Background loops of guard (the band, watch and outbox publishers) call :meth:`yield_to_fires` before a run:
    while a fire is under way they wait for it, at most ``max_wait_s``, so a storm of fires delays them but never
    stops them. The tick that crosses a trigger also kicks those publishers; run first, they held each fire's
    locked reads and SELL back by about 1 ms at the median and 5 ms at p99 (bench pipeline, scenario (e)).
    """

    def __init__(self, max_wait_s: float = 0.05) -> None:
        if max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0, got {max_wait_s}")
        self.max_wait_s = max_wait_s
        self.open = 0  # fires under way
        self.begun = 0  # fires ever begun
        self.held = 0  # runs that waited for fires
        self.overrun = 0  # of those, runs that stopped waiting after max_wait_s
        self._clear = asyncio.Event()
        self._clear.set()

    def begin(self) -> None:
        """A fire is under way (call it when the fire is decided, before its task starts)."""
        self.open += 1
        self.begun += 1
        self._clear.clear()

    def end(self) -> None:
        """A fire begun with :meth:`begin` has its answer (or failed): call once per :meth:`begin`."""
        self.open = max(0, self.open - 1)
        if not self.open:
            self._clear.set()

    async def yield_to_fires(self) -> None:
        """Return once no fire is under way, or after ``max_wait_s``."""
        if not self.open:
            return
        self.held += 1
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._clear.wait()
        except TimeoutError:
            self.overrun += 1


class Kicked:
    """A loop that runs ``step`` whenever kicked (coalescing kicks), retrying after ``retry_s`` on failure;
    with ``yield_to``, each run first awaits it (:meth:`FireWindow.yield_to_fires`)."""

    def __init__(self, name: str, retry_s: float = 0.5, min_interval_s: float = 0.0, delay_s: float = 0.0,
                 yield_to: Callable[[], Awaitable[None]] | None = None) -> None:
        self.name = name
        self.retry_s = retry_s
        self.min_interval_s = min_interval_s  # > 0: kicks within this long after a run wait and share the next one
        self.delay_s = delay_s  # > 0: a run starts this long after the kick (work made moot meanwhile is skipped)
        self.yield_to = yield_to
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def kick(self) -> None:
        """Ask for a run soon."""
        self._wake.set()
        self._idle.clear()

    async def step(self) -> None:
        """One run (overridden)."""

    async def drained(self) -> None:
        """Wait until no kick is pending (tests, shutdown)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            reraise_if_cancelled()  # redis-py can turn a cancel into a timeout it retries (a step's calls)
            await self._wake.wait()
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            if self.yield_to is not None:
                await self.yield_to()
            self._wake.clear()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried; the loop must survive outages
                reraise_if_cancelled()
                log.warning(f"{self.name} failed; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            if not self._wake.is_set():
                self._idle.set()
            if self.min_interval_s > 0:
                await asyncio.sleep(self.min_interval_s)
