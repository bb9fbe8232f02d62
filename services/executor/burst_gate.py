"""Small asyncio gates for the fan-out: the burst gate, and the in-flight bound (:class:`Slots`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from services.executor.gc_pause import GcPause
from services.executor.ports import AnswerHolder


class BurstGate:
    """Holds back work on venue answers while a burst of POSTs is still going out.

    ``pending`` counts POSTs not answered yet, ``unsent`` POSTs not written yet. Work on an answer
    waits (:meth:`wait`) while more than ``min_pending`` POSTs are pending (a fan-out in progress; a
    trickle of single orders never waits), and never longer than ``max_wait_s``. Once more than
    ``min_pending`` POSTs are unsent, the registered holders keep answers unread altogether until
    none is (at most ``max_wait_s``; after such a timeout holding resumes only once the burst is over).
    """

    def __init__(self, max_wait_s: float, min_pending: int = 0, gc_pause: GcPause | None = None) -> None:
        self.max_wait_s = max_wait_s
        self.min_pending = min_pending
        self.gc_pause = gc_pause  # collection off from a burst's start until at most ``min_pending`` are pending
        self.pending = 0
        self.unsent = 0
        self._waiters: list[asyncio.Future[None]] = []  # one future per waiter: cancelling one cancels no other
        self._timer: asyncio.TimerHandle | None = None
        self._holders: list[AnswerHolder] = []
        self.holding = False
        self._hold_armed = True
        self._hold_timer: asyncio.TimerHandle | None = None

    def hold_answers_with(self, holder: AnswerHolder) -> None:
        """Let ``holder`` keep answers unread while a burst is written."""
        self._holders.append(holder)

    def add(self, n: int = 1) -> None:
        """``n`` more POSTs are about to go out."""
        self.pending += n
        self.unsent += n
        self._check_hold()
        if self.gc_pause is not None and self.unsent > self.min_pending:
            self.gc_pause.pause()

    def sent(self, n: int = 1) -> None:
        """``n`` POSTs of the burst were written (or will never be)."""
        self.unsent = max(0, self.unsent - n)
        self._check_hold()

    def done(self, n: int = 1) -> None:
        """``n`` POSTs of the burst came back (or will never be sent)."""
        self.pending = max(0, self.pending - n)
        if self.pending <= self.min_pending:
            self._release()
            if self.gc_pause is not None:
                self.gc_pause.resume()

    def give_back(self, n: int) -> None:
        """``n`` POSTs announced by :meth:`add` will not be sent by whoever announced them."""
        self.sent(n)
        self.done(n)

    async def wait(self) -> None:
        """Return once at most ``min_pending`` POSTs are pending, or after ``max_wait_s``."""
        if self.pending <= self.min_pending or self.max_wait_s <= 0:
            return
        loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._release)
        waiter = loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def starved(self) -> None:
        """POSTs of the burst wait for an in-flight slot, which only a read answer frees: holding answers would
        stall the burst until the hold ended otherwise (the fan-out's last order started, ``max_wait_s``, or a POST
        deadline reading the held answers). The hold ends and is not renewed within this burst."""
        if self.holding:
            self._end_hold(False)

    def _check_hold(self) -> None:
        if self.holding:
            if self.unsent == 0:  # a burst is held until its last POST is written
                self._end_hold(True)
        elif self.unsent > self.min_pending:
            if self._hold_armed and self._holders and self.max_wait_s > 0:
                self.holding = True
                self._hold_timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._end_hold, False)
                for holder in self._holders:
                    holder.hold_answers()
        else:
            self._hold_armed = True

    def _end_hold(self, rearm: bool) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self.holding = False
        self._hold_armed = rearm
        for holder in self._holders:
            holder.release_answers()


class Once:
    """Calls ``action`` the first time :meth:`fire` is called (no-op without an action)."""

    def __init__(self, action: Callable[[], None] | None) -> None:
        self.action = action

    def fire(self) -> bool:
        """Run the action if it has not run; True when it ran now."""
        action, self.action = self.action, None
        if action is None:
            return False
        action()
        return True


class Slots:
    """A first-come, first-served bound on concurrent work: :meth:`acquire` waits while all ``n`` slots are taken.

    Unlike ``asyncio.Semaphore`` (whose release looks for a waiter from the head of its queue past those
    already woken but not yet run: quadratic when thousands wait and hundreds are released in one turn of the
    loop), a release hands its slot straight to the next waiter and drops it from the queue: O(1) whatever
    waits. A newcomer never overtakes a waiter.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"slots must be >= 1, got {n}")
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Waiters in the queue (a cancelled one counts until a release reaches it)."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting for one in arrival order."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot, then cancelled before it ran: pass it on
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter still waiting, else to the pool."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1
