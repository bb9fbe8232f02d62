"""Hot-path Redis commands on one shared, pipelined :class:`common.resp.RespConnection`.

Through redis-py a command costs about a tenth of a millisecond of Python (pool checkout, packing, a
stream reader per call); here it is one socket write and hiredis parses the reply, so concurrent
callers share the connection without taking turns. Services use it where a command is paid per
event (scripts of the request path, book reads, consumer cursors) and keep redis-py elsewhere.

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

from common.resp import Arg, RespClosed, RespConnection, RespError, RespTimeout

CURSOR_PREFIX = "tt:cursor:"


class Script:
    """A Lua script and its SHA1, as ``EVALSHA`` names it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA1


class FastRedis:
    """Commands and cached scripts on one lazily (re)opened connection.

    ``get``, ``set`` and ``eval`` take and return what redis-py's bytes-mode client does, so helpers
    written against redis-py (``common.marketstate.read_book``, ``common.reservations``) work with it.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
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
