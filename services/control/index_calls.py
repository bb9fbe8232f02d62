"""What a call that writes subscriptions owes the hot index (``hotsync``): the resync asked for when it is cancelled,
and the error it answers when its committed change could not be written to the index."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from services.control.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


class IndexNotWritten(Unavailable):
    """A subscription change was committed but its index entry could not be written: the router may copy on the old
    state until the resync (``IndexSync.retry_interval_s``) or the caller's retry of the call (idempotent) writes it."""


class _Dirty(Protocol):
    def mark_dirty(self) -> None: ...


class _Synced(Protocol):
    @property
    def sync(self) -> _Dirty: ...


S = TypeVar("S", bound=_Synced)


def resync_if_cancelled(method: Callable[Concatenate[S, P], Awaitable[T]]) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """A use case that writes subscriptions: cancelled (a client deadline or disconnect), perhaps during its
    commit and before its index write, it asks for the resync, which heals whatever the commit left."""
    @functools.wraps(method)
    async def run(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except asyncio.CancelledError:
            self.sync.mark_dirty()
            raise
    return run
