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

import redis.exceptions

from common.fastredis import FastRedis
from common.marketstate import WATCH_CHANNEL, watch_diff
from common.resp import RespClosed, RespError, RespTimeout


async def change_watch_set(fast: FastRedis, key: str, added: Collection[str], removed: Collection[str]) -> None:
    """Add and remove assets of the watch set ``key`` and announce the difference, in one MULTI; raises as redis-py
    does (``ResponseError`` for an error reply, ``ConnectionError`` / ``TimeoutError`` for a lost connection)."""
    commands: list[tuple[Any, ...]] = [("MULTI",)]
    if added:
        commands.append(("SADD", key, *sorted(added)))
    if removed:
        commands.append(("SREM", key, *sorted(removed)))
    commands.append(("PUBLISH", WATCH_CHANNEL, watch_diff(key, added, removed)))
    replies: list[Any] = []
    try:
        conn = await fast.connection()
        conn.write([(c, replies.append) for c in commands])  # no await before EXEC's write: nothing comes between
        result = await conn.call("EXEC", timeout_s=fast.timeout_s)
    except RespTimeout as exc:
        raise redis.exceptions.TimeoutError(str(exc)) from exc
    except RespClosed as exc:
        raise redis.exceptions.ConnectionError(str(exc)) from exc
    except RespError as exc:  # EXECABORT: a command was refused while queued
        raise redis.exceptions.ResponseError(str(exc)) from exc
    for reply in [*replies, *(result or [])]:
        if isinstance(reply, RespError):
            raise redis.exceptions.ResponseError(str(reply))
