"""The price-tick stream followed in batches, each tick handed to the coordinator.

Ticks are state, not history: the tick stream resumes from the last cursor seen by this process
(stale ticks never fire anyway; those read too late still lift trailing marks, as ingest's gate assumed
when it left out what followed them) and, after a (re)connect, the stored books are evaluated once so a
crossing that happened while disconnected is not missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from common.retry import Backoff
from common.streams import START_NEW
from services.guard.loops import reraise_if_cancelled
from services.guard.ports import OpenTicks
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)


class TickFeed:
    """Follows the price-tick stream in batches and hands each tick to ``handle``; reconnects with backoff."""

    def __init__(self, open_stream: OpenTicks, handle: Callable[[mpb.PriceTick], object],
                 on_connect: Callable[[], Awaitable[object]] | None = None, *,
                 urgent: Callable[[], bool] | None = None, backoff: Backoff | None = None) -> None:
        self.open_stream = open_stream
        self.handle = handle
        self.on_connect = on_connect
        self.urgent = urgent
        self.backoff = backoff or Backoff(0.05, 2.0)
        self.cursor = START_NEW
        self.connected = False
        self.reconnects = 0
        self.handler_errors = 0
        self.handled = 0
        self.batches = 0

    async def run(self) -> None:
        """Run until cancelled."""
        rng = random.Random()
        attempt = 0
        handle = self.handle
        while True:
            try:
                stream = self.open_stream(self.cursor)
                first = True
                async for cursor, batch in stream:
                    if first:
                        first = False
                        self.connected = True
                        if attempt and self.on_connect is not None:
                            # the stream is open again: books changed while it was down are evaluated now
                            await self._catch_up()
                        attempt = 0
                    self.batches += 1
                    for tick in batch:
                        self.handled += 1
                        # A batch is handled without awaiting anything: yield to the loop now and then, and
                        # every 16th tick (~0.1 ms) while fires are in flight, so their I/O is not held up by
                        # ticks (a loop turn costs more than a tick that changes nothing).
                        if not self.handled & 15 and (not self.handled & 63
                                                      or (self.urgent is not None and self.urgent())):
                            await asyncio.sleep(0)
                        try:
                            handle(tick)
                        except Exception:  # one bad tick must not stop the feed
                            self.handler_errors += 1
                            log.exception("tick handler failed", extra={"asset_id": tick.asset_id})
                    self.cursor = cursor
                raise ConnectionError("tick stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on any upstream failure
                reraise_if_cancelled()
                self.connected = False
                self.reconnects += 1
                delay = self.backoff.delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("tick stream reconnecting", extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
                await self._catch_up()

    async def _catch_up(self) -> None:
        if self.on_connect is None:
            return
        try:
            await self.on_connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - best effort: ticks keep coming
            log.warning("catch-up after reconnect failed", extra={"error": repr(exc)[:300]})
