"""asyncio helpers."""

from __future__ import annotations

import asyncio


def reraise_if_cancelling() -> None:
    """Raise CancelledError when the current task was asked to stop.

    redis-py's read timeout can turn a cancellation into a ``TimeoutError``; a retry loop that
    catches ``Exception`` must not swallow the request to stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
