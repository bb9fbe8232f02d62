"""Trigger notifications applied to the engine (through ``trigger_changes``: reload / resync).

Trigger notifications (``tt:triggers:changed``, ``{"triggerId","op","version"}``, version = INCR
``tt:triggers:version``) are fire-and-forget, so a full resync runs on every (re)subscribe, on a
version gap, when a notice's version is below the last one seen and the key says it went back (Redis lost it:
a lost notice would be no gap), and whenever the periodic version check finds a change nobody announced.
Control sends them; so does guard (``adapters.guard_notices``, with ``by``: the sending process), for the other
guard processes of a rollout: a trigger it changed is reloaded without an event (the sender wrote it), its own are
skipped, and one without a trigger id (its stored trailing marks changed) asks for a resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import orjson

from common.pubsub import ChannelFollower
from common.retry import Backoff

log = logging.getLogger(__name__)

TRIGGERS_CHANNEL = "tt:triggers:changed"
TRIGGERS_VERSION_KEY = "tt:triggers:version"


class Reloader(Protocol):
    """What the trigger sync drives."""

    async def reload(self, trigger_id: str, *, observed: bool = True) -> None:
        """Reload one trigger (``observed``: record the change made elsewhere as an event)."""

    async def reload_many(self, trigger_ids: list[str]) -> None:
        """Reload several triggers another guard changed (no event: it wrote them)."""

    async def resync(self) -> tuple[int, int]:
        """Reload everything."""


class Notice(NamedTuple):
    """One notification: ``by`` is the guard process that sent it ("" from control), ``trigger_ids`` the triggers
    a guard's notice names (control's name one, ``trigger_id``)."""

    trigger_id: str
    version: int
    by: str = ""
    trigger_ids: tuple[str, ...] = ()


def parse_notification(data: str | bytes) -> Notice:
    """A notification; raises ValueError, KeyError or TypeError on garbage."""
    payload = orjson.loads(data)
    many = payload.get("triggerIds") or []
    if not isinstance(many, list):
        raise TypeError("triggerIds must be a list")
    return Notice(str(payload["triggerId"]), int(payload["version"]), str(payload.get("by") or ""),
                  tuple(str(t) for t in many))


class TriggerSync:
    """Applies trigger notifications (control's and the other guards') to the engine."""

    def __init__(self, redis: Any, target: Reloader, *, check_s: float = 5.0,
                 initial: Callable[[], Awaitable[object]] | None = None, backoff: Backoff | None = None,
                 token: str = "") -> None:
        self.redis = redis
        self.target = target
        self.token = token  # this process's ``by``: its own notices are skipped
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
        """A quiet channel: resync when the version moved on (or back) without a notification."""
        current = await self._read_version()
        if current != self.version:
            await self._gap(current)

    async def _gap(self, version: int) -> None:
        """Notices were lost: resync, ``version`` the newest one accounted for."""
        self.gaps += 1
        self.version = version
        await self.target.resync()

    async def _apply(self, notice: Notice) -> None:
        if notice.version > self.version + 1:
            await self._gap(notice.version)
            return
        if notice.version <= self.version:
            # sent before the last load read the version (that load has it), or the version went back (Redis
            # lost the key): then the notices since are numbered below the last one seen, and one lost is no gap
            current = await self._read_version()
            if current < self.version:
                await self._gap(current)
                return
        self.version = max(self.version, notice.version)
        if notice.by and notice.by == self.token:
            return  # this process's change: applied as it was made
        if notice.trigger_ids:
            await self.target.reload_many(list(notice.trigger_ids))
        elif not notice.trigger_id:
            await self.target.resync()
        elif notice.by:
            await self.target.reload(notice.trigger_id, observed=False)
        else:
            await self.target.reload(notice.trigger_id)
