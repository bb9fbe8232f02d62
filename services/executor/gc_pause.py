"""Automatic garbage collection held off while a fan-out's POSTs are written.

A 10,000-order fan-out allocates a few million objects in about a second, most of them alive until its orders
end: the collector's automatic passes then scan them again and again (a fifth of the executor's CPU until the
last POST, measured), one pass at times standing still for 100 ms or more in the middle of the burst.
Reference counting still frees what it can; only cyclic garbage waits, for at most ``max_s``.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Protocol


class Collector(Protocol):
    """What this needs of the ``gc`` module."""

    def isenabled(self) -> bool: ...
    def enable(self) -> None: ...
    def disable(self) -> None: ...


class GcPause:
    """:meth:`pause` turns automatic collection off (when it was on), :meth:`resume` turns it back on; a pause
    ends by itself after ``max_s``. Collection someone else turned off is left alone."""

    def __init__(self, max_s: float, collector: Collector = gc) -> None:
        if max_s <= 0:
            raise ValueError(f"max_s must be > 0, got {max_s}")
        self.max_s = max_s
        self.collector = collector
        self.paused = False
        self.pauses = 0
        self._timer: asyncio.TimerHandle | None = None

    def pause(self) -> None:
        """Hold collection off (no-op while paused, or when collection is off already)."""
        if self.paused or not self.collector.isenabled():
            return
        self.collector.disable()
        self.paused = True
        self.pauses += 1
        self._timer = asyncio.get_running_loop().call_later(self.max_s, self.resume)

    def resume(self) -> None:
        """Turn collection back on (no-op unless paused here)."""
        if not self.paused:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.paused = False
        self.collector.enable()
