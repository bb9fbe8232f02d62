"""Hot-path Redis commands on one shared, pipelined :class:`common.resp.RespConnection`.

Through redis-py (with hiredis) a command costs about two to four times the client CPU it costs here
(``python -m bench compare --only redis``: pool checkout, packing, a stream reader per call); here it is one
socket write and hiredis parses the reply, so concurrent callers share the connection without taking
turns. Services use it where a command is paid per event (scripts of the request path, book reads,
consumer cursors, the executor's OrderEvent appends, control's reachability check before a mutation)
and keep redis-py elsewhere. Each service's scripts stay in that service.

The connection is opened on first use and again after it was lost. Failures to reach Redis are raised
as ``redis.exceptions.ConnectionError`` (``TimeoutError`` when no reply came in time, after which the
connection is closed: later replies would be out of step) and error replies as
``redis.exceptions.ResponseError``: the classes redis-py raises, so callers keep one notion of "Redis
is down". Scripts run by ``EVALSHA``, loaded with ``EVAL`` when Redis answers ``NOSCRIPT``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import redis.exceptions

from common.logtrim import CURSOR_PREFIX, readers_key
from common.resp import Arg, RespClosed, RespConnection, RespError, RespTimeout
from common.streams import DurableLog


class Script:
    """A Lua script and its SHA1, as ``EVALSHA`` names it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA1


def run_id_of(info: bytes | str) -> str:
    """The ``run_id`` field of an ``INFO server`` reply; ``ValueError`` when it has none."""
    text = info.decode() if isinstance(info, bytes) else info
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[len("run_id:"):].strip()
    raise ValueError("INFO server reply without a run_id")


class FastRedis:
    """Commands and cached scripts on one lazily (re)opened connection.

    ``get``, ``set`` and ``eval`` take and return what redis-py's bytes-mode client does, so helpers
    written against redis-py (``common.marketstate.read_book``, ``common.reservations``) work with it.

    :meth:`ensure_reachable` (control, before a mutation) trusts a reply received on the still-open
    connection within ``fresh_s`` instead of sending a ``PING``: under load every create's index upsert
    is that reply, so the check costs no round trip; a Redis that went away closes the connection (or
    stops replying, which the next command's timeout reports), and then the check pings again.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0, fresh_s: float = 0.25) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.fresh_s = fresh_s
        self.replied_at = float("-inf")  # monotonic time of the last reply on the current connection
        self._conn: RespConnection | None = None
        self._opening = asyncio.Lock()
        self._scripts: dict[str, Script] = {}

    async def connection(self) -> RespConnection:
        """The open connection (opened now if there is none), for callers that write several commands."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._opening:
            if self._conn is None or self._conn.closed:
                self.replied_at = float("-inf")
                try:
                    self._conn = await RespConnection.open(self.url, connect_timeout_s=self.timeout_s)
                except TimeoutError as exc:
                    raise redis.exceptions.TimeoutError(
                        f"connecting to redis timed out after {self.timeout_s}s") from exc
                except (OSError, RespClosed) as exc:
                    raise redis.exceptions.ConnectionError(f"cannot connect to redis: {exc}") from exc
                except RespError as exc:  # AUTH / SELECT refused
                    raise redis.exceptions.ConnectionError(f"redis refused the connection: {exc}") from exc
            return self._conn

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still turn out to be dead)."""
        return self._conn is not None and not self._conn.closed

    async def call(self, *args: Arg) -> Any:
        """One command; an error reply raises ``redis.exceptions.ResponseError``."""
        conn = await self.connection()
        try:
            reply = await conn.call(*args, timeout_s=self.timeout_s)
        except RespTimeout as exc:
            raise redis.exceptions.TimeoutError(str(exc)) from exc
        except RespClosed as exc:
            raise redis.exceptions.ConnectionError(str(exc)) from exc
        except RespError as exc:
            self.replied_at = time.monotonic()
            raise redis.exceptions.ResponseError(str(exc)) from exc
        self.replied_at = time.monotonic()
        return reply

    async def run_id(self) -> str:
        """The server's run id (new at every start of the server, another server's after a failover), read from
        ``INFO server`` without redis-py's parser: the executor asks before each batch of held events is declared
        durable, several times a second, and that parser leaves a reference cycle behind at every call."""
        return run_id_of(await self.call("INFO", "server"))

    async def run_script(self, script: Script, keys: list[Arg] | tuple[Arg, ...],
                         args: list[Arg] | tuple[Arg, ...]) -> Any:
        """``EVALSHA`` of ``script``, loading it with ``EVAL`` when Redis does not have it (yet, or any more)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", script.source, len(keys), *keys, *args)

    async def eval(self, source: str, numkeys: int, *keys_and_args: Arg) -> Any:
        """redis-py's ``eval``, run as :meth:`run_script` of ``source``."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = Script(source)
        return await self.run_script(script, keys_and_args[:numkeys], keys_and_args[numkeys:])

    async def get(self, key: Arg) -> bytes | None:
        """``GET``."""
        reply: bytes | None = await self.call("GET", key)
        return reply

    async def set(self, key: Arg, value: Arg) -> bool:
        """``SET`` (no options)."""
        return bool(await self.call("SET", key, value) == b"OK")

    async def transaction(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Run ``commands`` in one ``MULTI`` … ``EXEC`` (one round trip); their replies. Raises ``ResponseError``
        when Redis refused the transaction or any command in it (an error inside the ``EXEC`` reply, such as
        ``WRONGTYPE``, included), ``ConnectionError`` / ``TimeoutError`` for a lost connection."""
        replies = (await pipelined(self, [("MULTI",), *commands, ("EXEC",)]))[-1]
        if not isinstance(replies, list):
            raise redis.exceptions.ResponseError(f"transaction not run: EXEC answered {replies!r}")
        for reply in replies:
            if isinstance(reply, Exception):  # hiredis gives an error inside an array as its own ReplyError
                raise redis.exceptions.ResponseError(str(reply))
        return replies

    async def ping(self) -> None:
        """Raise unless Redis answers ``PING``."""
        await self.call("PING")

    async def ensure_reachable(self) -> None:
        """Raise unless Redis answered on the open connection within ``fresh_s`` or answers a ``PING`` now."""
        if self.connected and time.monotonic() - self.replied_at < self.fresh_s:
            return
        await self.ping()

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """:meth:`close`, awaitable like redis-py's."""
        self.close()


class FastCursorStore:
    """Consumer cursors under ``tt:cursor:<consumer>`` (the keys of ``common.consumer.RedisCursorStore``)
    on a :class:`FastRedis` connection."""

    def __init__(self, redis: FastRedis) -> None:
        self.redis = redis

    async def get(self, consumer: str) -> str | None:
        """The saved cursor, or None."""
        raw = await self.redis.get(CURSOR_PREFIX + consumer)
        return None if raw is None else raw.decode()

    async def set(self, consumer: str, cursor: str) -> None:
        """Save the cursor."""
        await self.redis.set(CURSOR_PREFIX + consumer, cursor)

    async def register(self, consumer: str, log_name: str, now_ms: int) -> None:
        """Register ``consumer`` as a reader of ``log_name`` (see ``common.logtrim``)."""
        await self.redis.call("HSET", readers_key(log_name), consumer, str(now_ms))


async def append_events(fast: FastRedis, log: DurableLog, payloads: list[bytes]) -> list[str]:
    """:meth:`DurableLog.append_many` on ``fast``'s connection: every ``XADD`` in two socket writes, the
    entries handed to the log's live feed in order. It holds the log's :attr:`~DurableLog.append_lock`, as
    every other append of the process does (the executor's journal appends a commit's OrderEvents here while
    the events a changed Redis server lost are appended again through the log): two appends at once could hand
    the live feed a later entry first, and a reader would skip the earlier one."""
    if not payloads:
        return []
    async with log.append_lock:
        return await _append_events(fast, log, payloads)


async def _append_events(fast: FastRedis, log: DurableLog, payloads: list[bytes]) -> list[str]:
    maxlen = str(log.maxlen)
    replies = await pipelined(fast, [("XADD", log.name, "MAXLEN", "~", maxlen, "*", "p", p) for p in payloads])
    cursors = [r.decode() for r in replies]
    for cursor, payload in zip(cursors, payloads, strict=True):
        log.published(cursor, payload)
    return cursors


async def pipelined(fast: FastRedis, commands: list[tuple[Arg, ...]]) -> list[Any]:
    """Run ``commands`` on ``fast``'s connection, written back to back (no await between them: nothing else is
    written between two of them) and answered in one round trip; their replies. Raises as redis-py does:
    ``ResponseError`` for an error reply, ``ConnectionError`` / ``TimeoutError`` for a lost connection."""
    conn = await fast.connection()
    replies: list[Any] = []
    try:
        if len(commands) > 1:
            conn.write([(c, replies.append) for c in commands[:-1]])
        last = await conn.call(*commands[-1], timeout_s=fast.timeout_s)
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
    return replies
