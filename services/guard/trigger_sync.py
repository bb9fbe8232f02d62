"""Control's trigger notifications applied to the engine (through ``trigger_changes``: reload / resync).

Trigger notifications (``tt:triggers:changed``, ``{"triggerId","op","version"}``, version = INCR
``tt:triggers:version``) are fire-and-forget, so a full resync runs on every (re)subscribe, on a
version gap, and whenever the periodic version check finds a change nobody announced.
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
from services.guard.loops import reraise_if_cancelled

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
