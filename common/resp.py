"""A pipelined Redis connection for hot paths: commands are written at once, replies answered in order.

redis-py's asyncio client takes a connection from its pool, packs, writes, and parks the caller on a
stream reader for every command: about a tenth of a millisecond of Python per call on this machine,
and one caller at a time per connection. Here a command is one ``transport.write`` from whatever
code has the data (ingest's websocket handler itself), and the reply is handed to the command's
callback inside ``data_received`` (hiredis parses), in the order the commands were written. Ordered
callbacks are what lets ingest's trade sink publish appended entries in log order without a lock;
:meth:`RespConnection.call` is the plain awaitable form (guard's blocking tick reads).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

Arg = bytes | str | int
OnReply = Callable[[Any], None]


class RespError(Exception):
    """Redis answered a command with an error reply."""


class RespClosed(ConnectionError):
    """The connection closed before the command's reply arrived."""


class RespTimeout(RespClosed):
    """No reply came in time (the connection was closed: later replies would be out of step)."""


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in the RESP wire format."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        append(b"$%d\r\n%b\r\n" % (len(data), data))  # one piece an argument: twice as fast as three
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespConnection) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class RespConnection:
    """One Redis connection: :meth:`write` sends commands at once; replies reach their callbacks in order."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[OnReply, float]] = deque()
        self._waiters: list[asyncio.Future[Any]] = []
        self._closed = asyncio.Event()
        self.closed = False
        self.close_reason: BaseException | None = None

    @classmethod
    async def open(cls, url: str, *, connect_timeout_s: float = 2.0) -> RespConnection:
        """Connect to ``url`` (redis://, rediss:// or unix://), authenticate and select the database."""
        opts = parse_url(url)
        tls = ssl.create_default_context() if opts.get("connection_class") is SSLConnection else None
        return await cls._open(opts.get("host", "localhost"), int(opts.get("port", 6379)), path=opts.get("path"),
                               tls=tls, username=opts.get("username"), password=opts.get("password"),
                               db=int(opts.get("db", 0) or 0), connect_timeout_s=connect_timeout_s)

    @classmethod
    async def open_tcp(cls, host: str, port: int, *, username: str | None = None, password: str | None = None,
                       db: int = 0, connect_timeout_s: float = 2.0) -> RespConnection:
        """Connect over plain TCP, authenticate and select ``db``."""
        return await cls._open(host, port, path=None, tls=None, username=username, password=password, db=db,
                               connect_timeout_s=connect_timeout_s)

    @classmethod
    async def open_unix(cls, path: str, *, username: str | None = None, password: str | None = None, db: int = 0,
                        connect_timeout_s: float = 2.0) -> RespConnection:
        """Connect over a unix socket, authenticate and select ``db``."""
        return await cls._open("", 0, path=path, tls=None, username=username, password=password, db=db,
                               connect_timeout_s=connect_timeout_s)

    @classmethod
    async def _open(cls, host: str, port: int, *, path: str | None, tls: ssl.SSLContext | None,
                    username: str | None, password: str | None, db: int, connect_timeout_s: float) -> RespConnection:
        conn = cls()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_timeout_s):
            if path:
                transport, _ = await loop.create_unix_connection(lambda: _Protocol(conn), path)
            else:
                transport, _ = await loop.create_connection(lambda: _Protocol(conn), host, port, ssl=tls)
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn._transport = transport  # uvloop's transports do not subclass asyncio's
            try:
                if password:
                    await (conn.call("AUTH", username, password) if username else conn.call("AUTH", password))
                if db:
                    await conn.call("SELECT", db)
            except BaseException:
                conn.close()
                raise
        return conn

    async def call(self, *args: Arg, timeout_s: float | None = None) -> Any:
        """Send one command and wait for its reply. An error reply raises :class:`RespError`; a lost
        connection, or no reply within ``timeout_s`` (the connection is then closed), :class:`RespClosed`."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answered(reply: Any) -> None:
            if fut.done():
                return
            if isinstance(reply, RespError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

        self.write([(args, answered)])
        self._waiters.append(fut)
        try:
            if timeout_s is None:
                return await fut
            try:
                async with asyncio.timeout(timeout_s):
                    return await fut
            except TimeoutError:
                self.close(RespClosed("redis reply timed out"))
                raise RespTimeout(f"redis reply timed out after {timeout_s}s") from None
        finally:
            self._waiters.remove(fut)

    def write(self, commands: list[tuple[tuple[Arg, ...], OnReply]]) -> None:
        """Write several commands in one write; each callback gets its reply (a :class:`RespError` for an
        error reply) inside ``data_received``, in this order. A lost connection calls none of them; an argument
        that cannot be packed raises before anything is queued or written."""
        if self.closed or self._transport is None:
            raise RespClosed("connection closed") from self.close_reason
        data = b"".join([pack(args) for args, _ in commands])  # before queueing: a failed pack must queue nothing
        now = time.monotonic()
        self._pending.extend([(on_reply, now) for _args, on_reply in commands])
        self._transport.write(data)

    async def wait_closed(self) -> None:
        """Return once the connection is closed."""
        await self._closed.wait()

    def oldest_pending_s(self, now: float) -> float:
        """How long the oldest unanswered command has waited (0 when none)."""
        return now - self._pending[0][1] if self._pending else 0.0

    def close(self, reason: BaseException | None = None) -> None:
        """Close the socket; unanswered commands get no reply (:meth:`call` raises :class:`RespClosed`)."""
        if self._transport is not None and not self.closed:
            self._transport.abort()
        self._lost(reason)

    def _received(self, data: bytes) -> None:
        self._reader.feed(data)
        while not self.closed:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(exc)
                return
            if reply is False:
                return
            if not self._pending:  # a reply nobody asked for: the stream is out of step
                self.close(RespError("unexpected reply"))
                return
            on_reply, _ = self._pending.popleft()
            on_reply(RespError(str(reply)) if isinstance(reply, hiredis.ReplyError) else reply)

    def _lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = exc
        self._pending.clear()
        self._closed.set()
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(RespClosed(f"connection closed: {exc!r}" if exc else "connection closed"))
