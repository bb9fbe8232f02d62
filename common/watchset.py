"""Watch-set updates (``tt:watch:positions``, ``tt:watch:triggers``) on a pipelined Redis connection.

The same commands as :func:`common.marketstate.change_watch_set` (MULTI, SADD, SREM, PUBLISH of the difference,
EXEC), written in one socket write on :class:`common.fastredis.FastRedis`'s connection: the commands of a
transaction go out back to back (nothing else is written to the connection between them), at a fraction of a
redis-py pipeline's cost. Every exit SELL that empties a position, and every BUY that opens one, goes through it
(the executor's journal), and so does every change of the assets with armed triggers (guard's watch publisher).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from common.fastredis import FastRedis
from common.marketstate import WATCH_CHANNEL, watch_diff


async def change_watch_set(fast: FastRedis, key: str, added: Collection[str], removed: Collection[str]) -> None:
    """Add and remove assets of the watch set ``key`` and announce the difference, in one MULTI; raises as redis-py
    does (``ResponseError`` for an error reply or a refused transaction, ``ConnectionError`` / ``TimeoutError`` for a
    lost connection)."""
    commands: list[tuple[Any, ...]] = []
    if added:
        commands.append(("SADD", key, *sorted(added)))
    if removed:
        commands.append(("SREM", key, *sorted(removed)))
    commands.append(("PUBLISH", WATCH_CHANNEL, watch_diff(key, added, removed)))
    await fast.transaction(commands)
