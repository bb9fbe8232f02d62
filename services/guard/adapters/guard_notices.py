"""Guard's own trigger changes announced to the other guard processes (``tt:triggers:changed``).

During a rollout two guards run, and each watches only what its engine holds. The copy exits one registers,
renews, resizes or cancels are announced here, on control's channel and version (one script: INCR
``tt:triggers:version``, PUBLISH, so the versions stay in order with control's), up to 500 ids in one message
(``triggerIds``), marked ``by`` this process: the others reload those triggers (``trigger_sync``), this one skips
its own. A graceful stop announces that its stored trailing marks changed (no trigger id): the others resync and
take the marks it saved that are higher than theirs. A notice not sent (Redis trouble) stays pending and is
retried; a guard that lost a notice sees the version gap and resyncs.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from services.guard.loops import Kicked
from services.guard.trigger_sync import TRIGGERS_CHANNEL, TRIGGERS_VERSION_KEY

# ARGV: channel, sender, op, trigger ids (one message for them all, one version; no id: the marks). Returns it.
_PUBLISH = """
local v = redis.call('INCR', KEYS[1])
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local msg = {triggerId='', op=ARGV[3], version=v, by=ARGV[2]}
if #ids > 0 then msg.triggerIds = ids end
redis.call('PUBLISH', ARGV[1], cjson.encode(msg))
return v
"""
_BATCH = 500  # ids per message: a fan-out's exits for 10,000 positions are a few dozen messages, not 30,000


class GuardNotices(Kicked):
    """Announces the triggers this process changed (:meth:`announce`), in the background."""

    def __init__(self, redis: Any, *, token: str = "") -> None:
        super().__init__("trigger notices")
        self.redis = redis
        self.token = token or secrets.token_hex(8)
        self.pending: dict[str, int] = {}  # trigger id → the announce that asked for it, oldest first
        self.sent = 0
        self._announces = 0

    def announce(self, trigger_ids: Iterable[str]) -> None:
        """Announce these triggers soon (call it once their change committed)."""
        self._announces += 1
        for tid in trigger_ids:
            self.pending.pop(tid, None)
            self.pending[tid] = self._announces
        if self.pending:
            self.kick()

    async def step(self) -> None:
        """Send every pending notice; those not sent stay pending, and so do those announced again meanwhile."""
        while self.pending:
            batch = list(self.pending.items())[:_BATCH]
            await self._send("GUARD", [tid for tid, _n in batch])
            for tid, n in batch:
                if self.pending.get(tid) == n:
                    del self.pending[tid]
            self.sent += len(batch)

    async def marks_saved(self) -> None:
        """Tell the other guards that this process's trailing marks are in PostgreSQL (its last flush)."""
        await self._send("MARKS", [])

    async def _send(self, op: str, ids: list[str]) -> int:
        return int(await self.redis.eval(_PUBLISH, 1, TRIGGERS_VERSION_KEY, TRIGGERS_CHANNEL, self.token, op, *ids))
