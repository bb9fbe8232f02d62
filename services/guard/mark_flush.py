"""Risen trailing high-water marks to PostgreSQL, in small statements with pauses between them.

A burst of risen marks (the first ticks after a restart activate every trailing stop that has no stored mark;
a market-wide move lifts thousands at once) is tens of thousands of rows. Written back to back they took a
core of PostgreSQL and guard's loop for half a second (``bench pipeline --only e``: 20,000 marks in 479 ms,
and the fires in that half second were the run's slowest, up to 71 ms from tick to POST). Paced, the same
rows go out in statements of ``rows`` with a pause after each, so that writing takes at most ``duty`` of the
flush's time and the fires keep their cores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal
from typing import Protocol

from common.decimals import ZERO

log = logging.getLogger(__name__)

Marks = Sequence[tuple[Decimal, list[str]]]


class MarkStore(Protocol):
    """Where the marks go."""

    async def save_marks(self, marks: Marks) -> None:
        """Persist these marks (never lowered), in one transaction."""


def pause_after(busy_s: float, duty: float) -> float:
    """The pause after a statement that took ``busy_s``, so that writing is ``duty`` of the time."""
    return max(busy_s, 0.0) * (1.0 / duty - 1.0)


def _keep_higher(into: dict[str, Decimal], marks: Iterable[tuple[str, Decimal]]) -> None:
    for tid, mark in marks:
        if mark > into.get(tid, ZERO):
            into[tid] = mark


class MarkFlusher:
    """Takes the engine's risen marks and writes them; marks a failed or cancelled flush did not write are kept
    for the next one (a mark is taken from the engine once, whether or not it rises again)."""

    def __init__(self, take: Callable[[], Iterable[Marks]], store: MarkStore, *,
                 rows: int = 200, duty: float = 0.25, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.perf_counter, position: Callable[[], str | None] | None = None,
                 on_saved: Callable[[str], Awaitable[None]] | None = None,
                 calm: Callable[[], object] | None = None) -> None:
        if rows < 1 or not 0.0 < duty <= 1.0:
            raise ValueError(f"rows must be ≥ 1 and duty in (0, 1], got rows={rows} duty={duty}")
        self.take = take
        self.store = store
        self.rows = rows
        self.duty = duty
        self.sleep = sleep
        self.clock = clock
        self.unsaved: dict[str, Decimal] = {}  # taken from the engine, not written yet
        # How far the tick log had been read when a flush took the marks (the tick feed's cursor; None: not known),
        # and who is told once a flush left nothing unsaved: every mark risen on the ticks up to it is then saved
        # (services.guard.mark_recovery starts its replay there). ``calm``: a value that changes whenever marks may
        # have left the engine unsaved (a fire began, a re-arm started); one that changed during the flush, and a
        # position of None, report nothing.
        self.position = position
        self.on_saved = on_saved
        self.calm = calm
        self._one_at_a_time = asyncio.Lock()  # a flush returns once what others took before it is written too

    async def flush(self, *, paced: bool = True) -> int:
        """Write every risen mark, ``rows`` a statement (each ordered by trigger id), pausing after each
        statement unless ``paced`` is off (shutdown); returns how many were written. One asked for while another
        writes waits for it: the marks that one took are not left to take, yet not written either."""
        async with self._one_at_a_time:
            calm = self.calm() if self.calm is not None else None
            through = self.position() if self.position is not None else None  # before the take: no await between
            written = await self._flush(paced)
            if self.unsaved or (self.calm is not None and self.calm() != calm):
                through = None
        await self._saved(through)  # outside the lock: a stalled Redis must not hold the next flush (the stop's)
        return written

    def keep(self, marks: dict[str, Decimal]) -> None:
        """Marks risen outside the engine's books (recovered at start-up), for the next flush to write."""
        _keep_higher(self.unsaved, marks.items())

    async def _flush(self, paced: bool) -> int:
        await self._take(paced)
        if not self.unsaved:
            return 0
        # The ids in one list and each statement's pairs built in its turn, rather than a tuple per mark held for
        # the whole flush: tens of thousands of young objects for guard's collector to walk.
        marks, self.unsaved = self.unsaved, {}
        ids = list(marks)
        written = 0
        try:
            while written < len(ids):
                part = sorted(ids[written:written + self.rows])  # one lock order for every writer
                started = self.clock()
                await self.store.save_marks([(marks[tid], [tid]) for tid in part])
                written += len(part)
                if paced and written < len(ids):
                    await self.sleep(pause_after(self.clock() - started, self.duty))
        except BaseException:  # beside any taken meanwhile: the higher stays
            _keep_higher(self.unsaved, ((tid, marks[tid]) for tid in ids[written:]))
            raise
        return written

    async def _saved(self, through: str | None) -> None:
        """Tell :attr:`on_saved` how far every risen mark is saved (a failure only leaves the older cursor)."""
        if through is None or self.on_saved is None:
            return
        try:
            await self.on_saved(through)
        except Exception as exc:  # noqa: BLE001 - the older cursor only makes the next start replay more
            log.warning("marks cursor not saved", extra={"error": repr(exc)[:300]})

    async def _take(self, paced: bool) -> None:
        """The risen marks, one book at a time; paced, the loop runs other work every ``rows`` × 5 marks (taking
        20,000 marks at once held guard's loop for ~15 ms). Stopped half-way, it takes the rest at once."""
        books = iter(self.take())
        since_yield = 0
        try:
            for book in books:
                since_yield += self._keep(book)
                if paced and since_yield >= self.rows * 5:
                    since_yield = 0
                    await self.sleep(0)
        except BaseException:
            for book in books:  # taken out of the engine already: keep them for the next flush
                self._keep(book)
            raise

    def _keep(self, book: Marks) -> int:
        """One book's marks into ``unsaved`` (the higher stays); returns how many."""
        for mark, ids in book:
            _keep_higher(self.unsaved, ((tid, mark) for tid in ids))
        return sum(len(ids) for _mark, ids in book)
