"""The two Redis commands every subscription create pays for, on one pipelined connection.

A create checks that Redis answers before it writes (``PING``) and, after its commit, upserts the
hot-index entry (one script). Through redis-py each of those costs about a tenth of a millisecond
of Python (pool checkout, packing, a stream reader per call); here a command is one socket write on
a shared :class:`common.resp.RespConnection` and its reply is parsed by hiredis, so concurrent
creates share the connection without taking turns.

Before a mutation, :meth:`HotRedis.ensure_reachable` trusts a reply received on the still-open
connection within ``fresh_s`` instead of sending a ``PING``: under load every create's index upsert
is that reply, so the check costs no round trip; a Redis that went away closes the connection (or
stops replying, which the next upsert's timeout reports), and then the check pings again.

The connection is opened on first use and again after it was lost. Every failure to reach Redis is
raised as ``redis.exceptions.ConnectionError`` (``TimeoutError`` when no reply came in time), the
same classes redis-py raises, so callers keep one notion of "Redis is down".
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import redis.exceptions

from common.resp import Arg, RespClosed, RespConnection, RespError


class HotRedis:
    """``PING`` and cached-script calls for control's request path."""

    def __init__(self, url: str, *, timeout_s: float, fresh_s: float = 0.25) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.fresh_s = fresh_s
        self._conn: RespConnection | None = None
        self._opening = asyncio.Lock()
        self._replied_at = float("-inf")  # monotonic time of the last reply on the current connection

    async def _connection(self) -> RespConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._opening:
            if self._conn is None or self._conn.closed:
                self._replied_at = float("-inf")
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

    async def call(self, *args: Arg) -> Any:
        """One command; an error reply raises ``redis.exceptions.ResponseError``."""
        conn = await self._connection()
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await conn.call(*args)
        except TimeoutError:
            conn.close(RespClosed("redis reply timed out"))  # later replies would be out of step
            raise redis.exceptions.TimeoutError(f"no reply from redis within {self.timeout_s}s") from None
        except RespClosed as exc:
            raise redis.exceptions.ConnectionError(str(exc)) from exc
        except RespError as exc:
            self._replied_at = time.monotonic()
            raise redis.exceptions.ResponseError(str(exc)) from exc
        self._replied_at = time.monotonic()
        return reply

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still turn out to be dead)."""
        return self._conn is not None and not self._conn.closed

    async def ensure_reachable(self) -> None:
        """Raise unless Redis answered on the open connection within ``fresh_s`` or answers a ``PING`` now."""
        conn = self._conn
        if conn is not None and not conn.closed and time.monotonic() - self._replied_at < self.fresh_s:
            return
        await self.ping()

    async def ping(self) -> None:
        """Raise unless Redis answers ``PING``."""
        await self.call("PING")

    async def run_script(self, script: Script, keys: tuple[Arg, ...], args: tuple[Arg, ...]) -> Any:
        """``EVALSHA`` of ``script``, loading it with ``EVAL`` when Redis does not have it (yet, or any more)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", script.source, len(keys), *keys, *args)

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Script:
    """A Lua script and its SHA1, as ``EVALSHA`` names it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts by SHA1
