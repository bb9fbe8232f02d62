"""Task helpers: loops that never swallow a cancellation, and a bounded stop of background tasks.

Some client libraries turn a cancellation that arrives mid-call into an ordinary exception; a
retry loop that catches ``Exception`` would then run on as if nothing happened. Loops check
:func:`cancel_requested` in their error path, and :func:`stop_tasks` cancels again until the tasks end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def cancel_requested() -> bool:
    """True when the current task has a pending cancellation request."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def reraise_if_cancelled() -> None:
    """Raise CancelledError when the current task was asked to stop (call from an ``except Exception``)."""
    if cancel_requested():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 5.0, rounds: int = 10) -> list[str]:
    """Cancel ``tasks`` (again and again if a library swallowed the cancellation); names of those left running."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            return []
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=timeout_s / rounds)
    names = sorted(t.get_name() for t in pending)
    if names:
        log.warning("tasks did not stop", extra={"tasks": names})
    return names
