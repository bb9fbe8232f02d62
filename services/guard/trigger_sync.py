"""Control's trigger notifications applied to the engine (through ``trigger_changes``: reload / resync).

Trigger notifications (``tt:triggers:changed``, ``{"triggerId","op","version"}``, version = INCR
``tt:triggers:version``) are fire-and-forget, so a full resync runs on every (re)subscribe, on a
version gap, and whenever the periodic version check finds a change nobody announced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from common.pubsub import ChannelFollower
from common.retry import Backoff

log = logging.getLogger(__name__)

TRIGGERS_CHANNEL = "tt:triggers:changed"
TRIGGERS_VERSION_KEY = "tt:triggers:version"


class Reloader(Protocol):
    """What the trigger sync drives."""

    async def reload(self, trigger_id: str) -> None:
        """Reload one trigger."""

    async def resync(self) -> tuple[int, int]:
        """Reload everything."""


def parse_notification(data: str | bytes) -> tuple[str, int]:
    """A notification's (trigger id, version); raises ValueError, KeyError or TypeError on garbage."""
    payload = orjson.loads(data)
    return str(payload["triggerId"]), int(payload["version"])


class TriggerSync:
    """Applies control's trigger notifications to the engine."""

    def __init__(self, redis: Any, target: Reloader, *, check_s: float = 5.0,
                 initial: Callable[[], Awaitable[object]] | None = None, backoff: Backoff | None = None) -> None:
        self.redis = redis
        self.target = target
        self.initial = initial
        self.version = -1
        self.ready = asyncio.Event()
        self.gaps = 0
        self.channel = ChannelFollower(
            redis, TRIGGERS_CHANNEL, parse=parse_notification, on_message=self._apply, reload=self._reload,
            on_tick=self._check_version, tick_s=check_s, tick_when_quiet=True, poll_s=check_s,
            backoff=backoff or Backoff(0.1, 5.0), log=log, failure_log="trigger sync restarting",
            bad_log="malformed trigger notification ignored")

    @property
    def notifications(self) -> int:
        """Notifications received (malformed ones included)."""
        return self.channel.messages

    async def _read_version(self) -> int:
        raw = await self.redis.get(TRIGGERS_VERSION_KEY)
        return int(raw) if raw else 0

    async def run(self) -> None:
        """Subscribe, resync, then apply notifications until cancelled; start over on any failure."""
        await self.channel.run()

    async def _reload(self) -> None:
        self.version = await self._read_version()
        if self.initial is not None:
            await self.initial()  # the start-up load, after subscribing so no change slips by
            self.initial = None
        else:
            await self.target.resync()
        self.ready.set()

    async def _check_version(self) -> None:
        """A quiet channel: resync when the version moved on without a notification."""
        current = await self._read_version()
        if current != self.version:
            self.gaps += 1
            self.version = current
            await self.target.resync()

    async def _apply(self, notification: tuple[str, int]) -> None:
        trigger_id, version = notification
        if version > self.version + 1:
            self.gaps += 1
            self.version = version
            await self.target.resync()
            return
        self.version = max(self.version, version)
        await self.target.reload(trigger_id)
