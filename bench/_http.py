"""A lean HTTP/1.1 keep-alive client for load generation on loopback.

The load generator shares the machine's two cores with the system it measures, so its own CPU per
request is part of what every request waits for. aiohttp's client costs about 0.7 ms of CPU per
request here; this one writes a pre-built request in one ``transport.write`` and parses the reply
(``Content-Length`` or chunked) as it arrives, inside ``data_received``. One request at a time per
connection; connections are reused and opened on demand up to ``limit``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque


class HttpError(Exception):
    """The connection failed or the reply could not be parsed."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reply = _Reply()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            done = self.reply.feed(data)
        except (HttpError, ValueError) as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(HttpError(f"bad reply: {exc}"))
            return
        if done and self.waiter is not None and not self.waiter.done():
            reply, self.reply = self.reply, _Reply()
            self.keep_alive = reply.keep_alive
            self.waiter.set_result((reply.status, bytes(reply.body)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc!r}"))


class _Reply:
    """One reply parsed as its bytes arrive (``Content-Length`` or chunked body)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.keep_alive = True
        self.body = bytearray()
        self.length = -1  # body bytes still expected; -1: chunked (or head not read yet)
        self.chunked = False
        self.head_done = False

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the reply is complete."""
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            self._head(bytes(self.buf[:end]).decode("latin-1").split("\r\n"))
            del self.buf[:end + 4]
        if not self.chunked:
            return len(self.buf) >= self.length and self._take(self.length)
        while True:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(self.buf[:line_end]).split(b";")[0], 16)
            if len(self.buf) < line_end + 2 + size + 2:
                return False
            if size == 0:
                return True
            self.body += self.buf[line_end + 2:line_end + 2 + size]
            del self.buf[:line_end + 2 + size + 2]

    def _take(self, n: int) -> bool:
        self.body += self.buf[:n]
        del self.buf[:n]
        return True

    def _head(self, lines: list[str]) -> None:
        try:
            self.status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"bad status line {lines[0]!r}") from None
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        self.keep_alive = fields.get("connection", "").lower() != "close"
        self.chunked = fields.get("transfer-encoding", "").lower() == "chunked"
        self.length = int(fields.get("content-length", "0"))
        self.head_done = True


class HttpPool:
    """Keep-alive connections to one ``host:port``."""

    def __init__(self, host: str, port: int, *, limit: int = 256, timeout_s: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._idle: deque[_Conn] = deque()
        self._slots = asyncio.Semaphore(limit)

    async def request(self, method: str, path: str, headers: bytes = b"",
                      body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request (``headers``: pre-encoded ``Name: value\\r\\n`` lines) and return (status, body)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n".encode() + headers
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        payload = head + b"\r\n" + (body or b"")
        async with self._slots:
            conn = await self._take()
            loop = asyncio.get_running_loop()
            conn.waiter = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await conn.waiter
            except BaseException:
                conn.transport.abort()
                raise
            finally:
                conn.waiter = None
            if conn.keep_alive and not conn.closed:
                self._idle.append(conn)
            else:
                conn.transport.close()
            return reply

    async def _take(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        _, conn = await asyncio.get_running_loop().create_connection(_Conn, self.host, self.port)
        return conn

    def close(self) -> None:
        """Close the idle connections."""
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()
