"""The two Redis commands every subscription create pays for, on one pipelined connection.

A create checks that Redis answers before it writes (``PING``) and, after its commit, upserts the
hot-index entry (one script), both on :class:`common.fastredis.FastRedis`.

Before a mutation, :meth:`HotRedis.ensure_reachable` trusts a reply received on the still-open
connection within ``fresh_s`` instead of sending a ``PING``: under load every create's index upsert
is that reply, so the check costs no round trip; a Redis that went away closes the connection (or
stops replying, which the next upsert's timeout reports), and then the check pings again.
"""

from __future__ import annotations

import time

from common.fastredis import FastRedis, Script

__all__ = ["HotRedis", "Script"]


class HotRedis(FastRedis):
    """``PING`` and cached-script calls for control's request path."""

    def __init__(self, url: str, *, timeout_s: float, fresh_s: float = 0.25) -> None:
        super().__init__(url, timeout_s=timeout_s)
        self.fresh_s = fresh_s

    async def ensure_reachable(self) -> None:
        """Raise unless Redis answered on the open connection within ``fresh_s`` or answers a ``PING`` now."""
        if self.connected and time.monotonic() - self.replied_at < self.fresh_s:
            return
        await self.ping()

    async def ping(self) -> None:
        """Raise unless Redis answers ``PING``."""
        await self.call("PING")
