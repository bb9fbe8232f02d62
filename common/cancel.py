"""Cancellation that client libraries must not swallow."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


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


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 5.0, rounds: int = 10) -> list[str]:
    """Cancel ``tasks`` again and again until they end, ``timeout_s`` at most (a library may swallow a cancellation;
    psycopg answers a first one by asking PostgreSQL to cancel the query, a second closes the connection); names of
    those left running."""
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
