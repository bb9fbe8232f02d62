"""Cancellation that client libraries must not swallow."""

from __future__ import annotations

import asyncio


def reraise_if_cancelling(cause: BaseException | None = None) -> None:
    """Raise CancelledError when the current task was asked to stop.

    redis-py reads under ``asyncio.timeout``: a cancellation that meets the read's own timeout can come
    back as that timeout (``get_message`` then returns None) or as a ``TimeoutError``. A loop that goes on
    after either must call this, or it runs on and whoever cancelled it waits for ever. ``cause``: the error
    the cancellation came back as, if any.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
