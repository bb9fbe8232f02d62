"""Appended order events kept in the outbox until Redis cannot lose them any more.

``appendfsync everysec`` writes an append to disk within about a second, so an event appended ``durable_after_s``
ago survives a crash of Redis' machine, provided the server is still the one it was appended to. A server seen to
have changed (a restart from disk, a failover to a replica) may have lost any event still held: they are all
appended again and held anew (readers take an event twice without harm). What an executor crash leaves held is
still in the outbox, which its next start appends again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

EVENTS_DURABLE_AFTER_S = 2.0


class OutboxEvents(Protocol):
    """The outbox rows of held events."""

    async def outbox_events(self, event_ids: list[str]) -> list[tuple[int, str, bytes]]:
        """(seq, event id, payload) of those of ``event_ids`` still in the outbox, in emission order."""


class EventHold:
    """The held events of one journal, oldest first."""

    def __init__(self, store: OutboxEvents, append: Callable[[list[bytes]], Awaitable[object]],
                 server_id: Callable[[], Awaitable[str]], *, durable_after_s: float = EVENTS_DURABLE_AFTER_S,
                 clock: Callable[[], float] | None = None) -> None:
        """``clock`` measures how long appending held events again took (the running event loop's by default)."""
        self.store = store
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.append = append
        self.server_id = server_id
        self.durable_after_s = durable_after_s
        self.ids: set[str] = set()
        self.republished = 0  # events appended again after a server change
        self.server: str | None = None  # the Redis server the held events were appended to
        self._held: deque[tuple[float, Sequence[str]]] = deque()

    def hold(self, event_ids: Sequence[str], now: float) -> None:
        """Keep events appended at ``now`` (monotonic seconds)."""
        if event_ids:
            self._held.append((now, event_ids))
            self.ids.update(event_ids)

    def due_in(self, now: float) -> float | None:
        """Seconds until the oldest held event is due (None: nothing held)."""
        return self._held[0][0] + self.durable_after_s - now if self._held else None

    async def settle(self, now: float) -> list[str]:
        """The ids of the events now durable (to be marked published). Checks the server first, once any is
        due; a changed server gets every held event again, and none is durable yet."""
        due = self.due_in(now)
        if due is None or due > 0:
            return []
        server = await self.server_id()
        if self.server is not None and server != self.server:
            held, before, started = list(self.ids), len(self._held), self.clock()
            rows = await self.store.outbox_events(held)
            if rows:
                await self.append([payload for _seq, _id, payload in rows])
            self.republished += len(rows)
            self.server = server
            # held from their new append (``now`` plus the time the outbox read took: it may have been slow), and
            # those held while these were read and appended again stay held too, each in its own turn
            self._held = deque([(now + self.clock() - started, held), *list(self._held)[before:]])
            log.warning("redis server changed: order events of the last seconds appended again",
                        extra={"events": len(rows)})
            return []
        self.server = server
        out: list[str] = []
        while self._held and self._held[0][0] + self.durable_after_s <= now:
            out.extend(self._held.popleft()[1])
        self.ids.difference_update(out)
        return out
