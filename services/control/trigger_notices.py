"""Trigger change notices for guard: ``{"triggerId","op","version"}`` on ``tt:triggers:changed``, ``version`` =
INCR ``tt:triggers:version``.

Guard reloads a notified trigger from PostgreSQL (a repeated notice costs it one reload) and resyncs all of them
when the version moves on without a notice. So a change whose notice cannot be sent is kept pending here and
sent by the resync loop, and a new process bumps the version once (:meth:`TriggerNotices.flush`): the notices
a previous process still held when it stopped are gone with it, and every guard reloads everything instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from services.control.errors import short_reason

log = logging.getLogger(__name__)

TRIGGERS_CHANNEL = "tt:triggers:changed"
TRIGGERS_VERSION_KEY = "tt:triggers:version"
_PUBLISH = """
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], cjson.encode({triggerId=ARGV[2], op=ARGV[3], version=v}))
return v
"""


class TriggerNotices:
    """Sends trigger notices; those not sent yet stay pending until :meth:`flush`."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.pending: dict[str, tuple[str, int]] = {}  # trigger id → (op, the defer that recorded it)
        self._defers = 0
        self._bump_due = True  # this process has not bumped the version yet

    def defer(self, trigger_ids: Iterable[str], op: str) -> None:
        """Record notices as pending (sent by :meth:`publish` or :meth:`flush`)."""
        self._defers += 1
        for trigger_id in trigger_ids:
            self.pending[trigger_id] = (op, self._defers)

    async def publish(self, trigger_ids: list[str], op: str) -> bool:
        """Send pending notices in order; False when one failed (it and the rest stay pending)."""
        for trigger_id in trigger_ids:
            entry = self.pending.get(trigger_id)
            try:
                await self._send(trigger_id, op)
            except Exception as exc:  # noqa: BLE001 - committed already; the flush retries
                log.warning("trigger publish failed; will retry",
                            extra={"trigger_id": trigger_id, "error": short_reason(exc)})
                return False
            self._sent(trigger_id, entry)
        return True

    async def flush(self) -> int:
        """Bump the version if this process has not yet, then send every pending notice; returns how many."""
        if self._bump_due:
            await self.redis.incr(TRIGGERS_VERSION_KEY)
            self._bump_due = False
        sent = 0
        for trigger_id, entry in list(self.pending.items()):
            await self._send(trigger_id, entry[0])
            self._sent(trigger_id, entry)
            sent += 1
        return sent

    def _sent(self, trigger_id: str, entry: tuple[str, int] | None) -> None:
        if entry is not None and self.pending.get(trigger_id) == entry:  # not deferred again meanwhile
            del self.pending[trigger_id]

    async def _send(self, trigger_id: str, op: str) -> int:
        return int(await self.redis.eval(_PUBLISH, 1, TRIGGERS_VERSION_KEY, TRIGGERS_CHANNEL, trigger_id, op))
