"""Consumers feeding the core: control's trigger notifications, the price-tick stream.

Trigger notifications (``tt:triggers:changed``, ``{"triggerId","op","version"}``, version = INCR
``tt:triggers:version``) are fire-and-forget, so a full resync runs on every (re)subscribe, on a
version gap, and whenever the periodic version check finds a change nobody announced.

Ticks are state, not history: the tick stream resumes from the last cursor seen by this process
(stale ticks never fire anyway) and, after a (re)connect, the stored books are evaluated once so a
crossing that happened while disconnected is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from common.retry import Backoff
from common.streams import START_NEW
from services.guard.adapters.tick_reader import OpenTicks
from services.guard.loops import reraise_if_cancelled
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)

TRIGGERS_CHANNEL = "tt:triggers:changed"
TRIGGERS_VERSION_KEY = "tt:triggers:version"


class Reloader(Protocol):
    """What the trigger sync drives."""

    async def reload(self, trigger_id: str) -> None:
        """Reload one trigger."""

    async def resync(self) -> tuple[int, int]:
        """Reload everything."""


class TriggerSync:
    """Applies control's trigger notifications to the engine."""

    def __init__(self, redis: Any, target: Reloader, *, check_s: float = 5.0,
                 initial: Callable[[], Awaitable[object]] | None = None, backoff: Backoff | None = None) -> None:
        self.redis = redis
        self.target = target
        self.initial = initial
        self.check_s = check_s
        self.backoff = backoff or Backoff(0.1, 5.0)
        self.version = -1
        self.ready = asyncio.Event()
        self.notifications = 0
        self.gaps = 0

    async def _read_version(self) -> int:
        raw = await self.redis.get(TRIGGERS_VERSION_KEY)
        return int(raw) if raw else 0

    async def run(self) -> None:
        """Subscribe, resync, then apply notifications until cancelled; start over on any failure."""
        rng = random.Random()
        attempt = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(TRIGGERS_CHANNEL)
                self.version = await self._read_version()
                if self.initial is not None:
                    await self.initial()  # the start-up load, after subscribing so no change slips by
                    self.initial = None
                else:
                    await self.target.resync()
                self.ready.set()
                attempt = 0
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.check_s)
                    reraise_if_cancelled()  # a cancel that met the read's timeout came back as that timeout
                    if msg is None:
                        current = await self._read_version()
                        if current != self.version:
                            self.gaps += 1
                            self.version = current
                            await self.target.resync()
                        continue
                    await self._apply(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis or PostgreSQL outage: start over
                reraise_if_cancelled()
                delay = self.backoff.delay(min(attempt, 8), rng.random())
                attempt += 1
                log.warning("trigger sync restarting", extra={"error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()

    async def _apply(self, data: Any) -> None:
        self.notifications += 1
        try:
            payload = orjson.loads(data)
            trigger_id = str(payload["triggerId"])
            version = int(payload["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("malformed trigger notification ignored", extra={"data": str(data)[:200]})
            return
        if version > self.version + 1:
            self.gaps += 1
            self.version = version
            await self.target.resync()
            return
        self.version = max(self.version, version)
        await self.target.reload(trigger_id)


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
