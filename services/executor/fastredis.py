"""The executor's OrderEvent appends on the pipelined Redis connection (:class:`common.fastredis.FastRedis`).

The journal appends the committed OrderEvents to ``tt:stream:order_events``: through redis-py every
``XADD`` of a pipeline costs packing and parsing in Python; here all of a commit's ``XADD`` go out in
two socket writes and hiredis parses the replies. Book reads, cursor saves and reservation releases
use the same connection (``FastRedis`` speaks redis-py's ``get`` / ``set`` / ``eval`` forms).
"""

from __future__ import annotations

from typing import Any

import redis.exceptions

from common.fastredis import FastRedis
from common.resp import Arg, OnReply, RespClosed, RespError, RespTimeout
from common.streams import DurableLog


async def append_events(fast: FastRedis, log: DurableLog, payloads: list[bytes]) -> list[str]:
    """:meth:`DurableLog.append_many` on this connection: every ``XADD`` in two socket writes, the
    entries handed to the log's live feed in order. The caller must be the log's only appender
    in this process (the journal is)."""
    if not payloads:
        return []
    conn = await fast.connection()
    maxlen = str(log.maxlen)
    replies: list[Any] = []
    on_reply = replies.append
    cmds: list[tuple[tuple[Arg, ...], OnReply]] = [
        (("XADD", log.name, "MAXLEN", "~", maxlen, "*", "p", p), on_reply) for p in payloads[:-1]]
    try:
        if cmds:
            conn.write(cmds)
        last = await conn.call("XADD", log.name, "MAXLEN", "~", maxlen, "*", "p", payloads[-1],
                               timeout_s=fast.timeout_s)
    except RespTimeout as exc:
        raise redis.exceptions.TimeoutError(str(exc)) from exc
    except RespClosed as exc:
        raise redis.exceptions.ConnectionError(str(exc)) from exc
    except RespError as exc:
        raise redis.exceptions.ResponseError(str(exc)) from exc
    replies.append(last)  # replies come in order: the earlier ones have all arrived
    for reply in replies:
        if isinstance(reply, RespError):
            raise redis.exceptions.ResponseError(str(reply))
    cursors = [r.decode() for r in replies]
    for cursor, payload in zip(cursors, payloads, strict=True):
        log.published(cursor, payload)
    return cursors
