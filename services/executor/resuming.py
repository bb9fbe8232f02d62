"""Which stored orders a resume takes up, and as what: the start's, the given-up sweep's, a redelivered intent's, an
operator's hand-back (:meth:`.order_runner.OrderRunner.resume`).

Resumes of one order can overlap: each is handed rows read before it, and another may run the order to its end, or
book its fills and be given up on again, in between. A resume therefore takes the orders nothing here runs (they
count as running until it started them) and reads their rows again once taken: an older row would book again the
fills booked since (from its smaller fill), or write its restart over the order's end and run it again. Until this
process ran an order, no row can be older than a run here: the start's rows are taken as read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Rows = list[dict[str, Any]]


class Resuming:
    """The orders being taken up now (the runner counts them as running), and how their rows are read again
    (``rows_of``: the stored rows of those of the ids not final, as ``OrderStore.open_among``)."""

    def __init__(self, rows_of: Callable[[list[str]], Awaitable[Rows]]) -> None:
        self.rows_of = rows_of
        self.ran = False  # an order ran here: rows handed in may be older than that run
        self._taken: dict[str, asyncio.Event] = {}  # set once the resume gave the order back (started or not)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._taken

    async def released(self, client_order_id: str) -> None:
        """Return once no resume holds the order (one that holds it now started it by then, or left it)."""
        while (given_back := self._taken.get(client_order_id)) is not None:
            await given_back.wait()

    @contextlib.asynccontextmanager
    async def taken(self, rows: Rows, running: Callable[[str], bool]) -> AsyncIterator[Rows]:
        """The rows of the orders of ``rows`` that nothing here runs, as stored now; they are taken (running) until
        the block ends, where the caller starts them."""
        ids = list(dict.fromkeys(c for r in rows if not running(c := r["client_order_id"])))
        self._taken.update((c, asyncio.Event()) for c in ids)
        try:
            if not ids:
                yield []
            elif self.ran:
                yield await self.rows_of(ids)
            else:
                first = {r["client_order_id"]: r for r in reversed(rows)}
                yield [first[c] for c in ids]
        finally:
            for c in ids:
                self._taken.pop(c).set()
