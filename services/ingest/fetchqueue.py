"""The queue of the market sync's REST fetches, in three lanes served in order: market info (the router copies a new
market's trades with it, the socket's resolutions need it), then the ``/book`` resyncs of held assets (an open
position or an armed trigger: guard fires on their ticks), then every other resync. A mass desync (thousands of books
after a reconnect without snapshots) thus never holds back a market's info or a held book's resync.

Its depth by lane is the gauge ``ingest.rest_fetches_queued`` (kind: market, book_held, book), read at collection
and exported from the start; fetches under way or waiting for a retry are not in it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

MARKET, HELD_BOOK, BOOK = "market", "book_held", "book"
LANES = (MARKET, HELD_BOOK, BOOK)


class FetchQueue:
    """Keys waiting in lanes; :meth:`get` takes from the first non-empty lane it serves, oldest first."""

    def __init__(self, meter: Any | None = None) -> None:
        self._lanes: dict[str, deque[str]] = {lane: deque() for lane in LANES}
        self._waiters: list[asyncio.Future[None]] = []
        meter = meter or metrics.get_meter("tradingtools.ingest")
        meter.create_observable_gauge("ingest.rest_fetches_queued", callbacks=[self._observe],
                                      description="REST fetches of the market sync waiting, by kind (market info, "
                                                  "book resyncs of held assets, other book resyncs)")

    def put(self, lane: str, key: str) -> None:
        """Queue ``key`` in ``lane`` (the caller keeps a key from being queued twice)."""
        self._lanes[lane].append(key)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:  # a handful of workers: each looks again for what it serves
            if not waiter.done():
                waiter.set_result(None)

    def depth(self, lane: str) -> int:
        """Keys waiting in ``lane``."""
        return len(self._lanes[lane])

    async def get(self, lanes: tuple[str, ...] = LANES) -> tuple[str, str]:
        """The oldest key of the first of ``lanes`` holding one, as (lane, key); waits while they are empty."""
        while True:
            for lane in lanes:
                waiting = self._lanes[lane]
                if waiting:
                    return lane, waiting.popleft()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        for lane in LANES:
            yield Observation(len(self._lanes[lane]), {"kind": lane})
