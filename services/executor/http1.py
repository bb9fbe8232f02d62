"""A small HTTP/1.1 keep-alive client on asyncio protocols, for the executor's venue calls.

Why not aiohttp or httpx: a 1,000-order fan-out is CPU-bound in the HTTP client. Measured on this
machine (``bench/executor.py``), httpx's default transport needs ~2 s to land 1,000 concurrent
POSTs and aiohttp ~260 µs of client CPU per request; this client needs ~50 µs, which is what lets
the last POST of a fan-out arrive within the 200 ms budget.

Scope, deliberately small: one origin (scheme, host, port), plain TCP or TLS, requests with a
bytes body and Content-Length, responses with Content-Length, chunked encoding, or read-to-close;
1xx responses skipped; keep-alive unless the server says ``Connection: close`` or speaks HTTP/1.0;
a whole-request timeout (a timed-out connection is closed, never reused). Idle connections are
reused newest first; a connection the server closed is dropped as soon as the loss is noticed.
Errors come back as exceptions the caller classifies: :class:`ConnectFailed` (nothing was sent),
:class:`ResponseTimeout`, :class:`ConnectionDropped` (sent, no complete answer), :class:`BadResponse`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
_SIZE_LINE = -1  # chunked decoding: expecting a chunk-size line
_TRAILERS = -2  # chunked decoding: after the last chunk, reading trailers up to an empty line


class HttpError(Exception):
    """A request that produced no usable response."""


class ConnectFailed(HttpError):
    """The connection could not be opened: the request was not sent."""


class ResponseTimeout(HttpError):
    """No complete response within the timeout (the request may have been processed)."""


class ConnectionDropped(HttpError):
    """The connection closed before a complete response (the request may have been processed)."""


class BadResponse(HttpError):
    """The bytes received are not an HTTP/1.x response we can read."""


@dataclass(frozen=True, slots=True)
class Response:
    """Status, lower-cased headers and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Parser:
    """Incremental HTTP/1.x response parser (one response at a time)."""

    def __init__(self, head_request: bool = False) -> None:
        self.buf = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self._head_done = False
        self._length: int | None = None
        self._chunked = False
        self._until_close = False
        self._body = bytearray()
        self._chunk_left = _SIZE_LINE  # or bytes left in the current chunk, or _TRAILERS
        self._done = False
        self._head_request = head_request

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once the response is complete."""
        self.buf += data
        while not self._done:
            if not self._head_done:
                if not self._parse_head():
                    return False
                continue
            if not self._parse_body():
                return False
        return True

    def eof(self) -> bool:
        """The connection closed: True when that completes the response (read-to-close bodies)."""
        if self._head_done and self._until_close:
            self._body += self.buf
            self.buf.clear()
            self._done = True
        return self._done

    def response(self) -> Response:
        """The parsed response."""
        return Response(self.status, self.headers, bytes(self._body))

    def _parse_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise BadResponse("response head too large")
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[:end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadResponse(f"bad header line {line[:80]!r}")
            key = name.strip().lower().decode("latin-1")
            val = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        if 100 <= status < 200:
            return True  # interim response: parse the next head
        self.status, self.headers, self._head_done = status, headers, True
        connection = headers.get("connection", "").lower()
        self.keep_alive = parts[0] == b"HTTP/1.1" and "close" not in connection
        if self._head_request or status in (204, 304):
            self._done = True
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise BadResponse("bad Content-Length") from None
            if self._length < 0 or self._length > MAX_BODY_BYTES:
                raise BadResponse("Content-Length out of range")
        else:
            self._until_close = True
            self.keep_alive = False
        return True

    def _parse_body(self) -> bool:
        if self._length is not None:
            if len(self.buf) < self._length:
                return False
            self._body += self.buf[:self._length]
            del self.buf[:self._length]
            self._done = True
            return True
        if self._chunked:
            return self._parse_chunk()
        if len(self.buf) + len(self._body) > MAX_BODY_BYTES:
            raise BadResponse("body too large")
        self._body += self.buf
        self.buf.clear()
        return False  # read to close

    def _parse_chunk(self) -> bool:
        if self._chunk_left == _SIZE_LINE:
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            size_text = bytes(self.buf[:end]).split(b";", 1)[0].strip()
            del self.buf[:end + 2]
            try:
                self._chunk_left = int(size_text, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_text[:20]!r}") from None
            if self._chunk_left == 0:
                self._chunk_left = _TRAILERS
            elif len(self._body) + self._chunk_left > MAX_BODY_BYTES:
                raise BadResponse("body too large")
            return True
        if self._chunk_left == _TRAILERS:
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(self.buf[:end])
            del self.buf[:end + 2]
            if not line:
                self._done = True
            return True
        if len(self.buf) < self._chunk_left + 2:
            return False
        self._body += self.buf[:self._chunk_left]
        del self.buf[:self._chunk_left + 2]
        self._chunk_left = _SIZE_LINE
        return True


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: _Parser | None = None
        self._waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None or self._waiter is None:
            self.close()  # unsolicited bytes: the connection is out of step
            return
        try:
            complete = self._parser.feed(data)
        except BadResponse as exc:
            self._fail(exc)
            self.close()
            return
        if complete:
            waiter, parser = self._waiter, self._parser
            self._waiter = self._parser = None
            if not parser.keep_alive or parser.buf:
                self.close()
            if not waiter.done():
                waiter.set_result(parser.response())

    def eof_received(self) -> bool | None:
        if self._parser is not None and self._waiter is not None and self._parser.eof():
            waiter, parser = self._waiter, self._parser
            self._waiter = self._parser = None
            if not waiter.done():
                waiter.set_result(parser.response())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and self._waiter is not None and self._parser.eof():
            waiter, parser = self._waiter, self._parser
            self._waiter = self._parser = None
            if not waiter.done():
                waiter.set_result(parser.response())
            return
        self._fail(ConnectionDropped(f"connection closed before the response ({exc!r})"))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter, self._parser = self._waiter, None, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, data: bytes, head_request: bool) -> asyncio.Future[Response]:
        assert self.transport is not None and self._waiter is None
        self._parser = _Parser(head_request)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Http1Client:
    """Keep-alive connections to one origin (``http://host:port`` or ``https://host:port``)."""

    def __init__(self, base_url: str, *, max_connections: int = 0, connect_timeout_s: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None, default_headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        default_port = 443 if parts.scheme == "https" else 80
        host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            host_header = f"[{self.host}]" if self.port == default_port else f"[{self.host}]:{self.port}"
        fixed = {"Host": host_header, **(default_headers or {})}
        self._fixed = "".join(f"{k}: {_check(v)}\r\n" for k, v in fixed.items()).encode("latin-1")
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def request(self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                      timeout_s: float) -> Response:
        """Send one request and read its response; raises an :class:`HttpError` subclass on failure."""
        if self._closed:
            raise ConnectFailed("client closed")
        head = [f"{method} {self.base_path}{path} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {_check(v)}\r\n".encode("latin-1"))
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        payload = b"".join(head) + body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        conn = await self._acquire(deadline)
        try:
            waiter = conn.send(payload, method == "HEAD")
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                response = await waiter
            finally:
                timer.cancel()
        except BaseException:
            conn.close()
            self._release(conn)
            raise
        self._release(conn)
        return response

    async def _acquire(self, deadline: float) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
            self._open -= 1
        if self.max_connections and self._open >= self.max_connections:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot_waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                raise ConnectFailed("no free connection in time") from None
            return await self._acquire(deadline)
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None),
                timeout=min(self.connect_timeout_s, max(0.001, deadline - asyncio.get_running_loop().time())))
        except BaseException as exc:
            self._open -= 1
            self._wake()
            if isinstance(exc, OSError | TimeoutError | ssl.SSLError):
                raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
            raise
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self._closed:
            self._open -= 1
        else:
            self._idle.append(conn)
        self._wake()

    def _wake(self) -> None:
        while self._slot_waiters:
            fut = self._slot_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    @property
    def open_connections(self) -> int:
        """Connections open now (idle or busy)."""
        return self._open

    async def close(self) -> None:
        """Close every idle connection; busy ones close when their request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
            self._open -= 1


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(ResponseTimeout("no complete response in time"))


def _check(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("header values must not contain CR or LF")
    return value
