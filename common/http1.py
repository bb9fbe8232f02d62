"""A small HTTP/1.1 keep-alive client on asyncio protocols, for hot-path calls to one origin (the
executor's venue calls, ``bench``'s REST load).

Why not aiohttp or httpx: a 1,000-order fan-out is CPU-bound in the HTTP client. Measured on this
machine (``bench compare --only http``: 1,000 concurrent order POSTs to the Insiders fake, medians of
interleaved rounds), this client lands the last POST ~40 ms after the burst starts at ~35 µs of client
CPU per POST; aiohttp needs ~2.6× the time and ~3× the CPU, and httpx even with an unlimited pool
(``httpx.Limits(max_connections=None, max_keepalive_connections=None)``) ~70× the time (its pool
looks at every connection for every request). A lone POST costs ~55 µs of CPU here, ~3× that in
aiohttp and ~12× in httpx.

Scope, deliberately small: one origin (scheme, host, port), plain TCP or TLS, requests with a
bytes body and Content-Length, responses with Content-Length, chunked encoding, or read-to-close;
1xx responses skipped; keep-alive unless the server says ``Connection: close`` or speaks HTTP/1.0;
a whole-request timeout (a timed-out connection is closed, never reused). Idle connections are
reused newest first, and only when nothing waits unread in the socket (a close the loop has not read yet, stray
bytes): a POST is never written into a connection the server already closed. A connection is not kept when its
answer came before the request was all written, or framed itself two ways, and bytes on an idle one close it.
Errors come back as exceptions the caller classifies: :class:`ConnectFailed` (nothing was sent),
:class:`ResponseTimeout`, :class:`ConnectionDropped` (sent, no complete answer), :class:`BadResponse`.
Response parsing lives in :mod:`common.http1parse`. Timeouts share one loop timer; answers
can be held unread while a burst of requests is written (:meth:`Http1Client.hold_answers`). A deadline
whose timer fires late because the loop stood still (the process stopped, a long pause) waits one more poll
of the sockets first: an answer that came meanwhile is read, not reported as a timeout.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import deque
from urllib.parse import urlsplit

from common.http1parse import (
    BadResponse,
    ConnectFailed,
    ConnectionDropped,
    HttpError,
    Response,
    ResponseTimeout,
    _Parser,
)

_TIMER_SLACK_S = 0.001  # a loop timer may fire up to its clock resolution early
# A deadline timer that fires this late means the loop itself stood still (the process was stopped, a long pause):
# answers that came meanwhile are still unread in the sockets, and are read before anything is called a timeout.
_STALL_S = 0.1
_STALL_GRACE_S = 0.02

__all__ = ["BadResponse", "ConnectFailed", "ConnectionDropped", "Http1Client", "HttpError", "Response",
           "ResponseTimeout"]


class _Hold:
    """Whether answers are being held, and the connections holding some."""

    __slots__ = ("active", "conns")

    def __init__(self) -> None:
        self.active = False
        self.conns: list[_Connection] = []

    def flush(self) -> None:
        """Process every held answer (holding goes on if active)."""
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.flush_held()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, hold: _Hold) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._hold = hold
        self._held: list[bytes] = []
        self._head_request = False
        self._parser: _Parser | None = None
        self._waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # a burst is being written: keep the answer unread for now (bytes on an idle connection are no answer: they
        # close it now, not once the hold ends and a request reused it meanwhile would read them as its own)
        if self._hold.active and self._waiter is not None:
            if not self._held:
                self._hold.conns.append(self)
            self._held.append(data)
            return
        self._receive(data)

    def flush_held(self) -> None:
        """Process the bytes kept while answers were held."""
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._receive(data)

    def _receive(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # unsolicited bytes: the connection is out of step
            return
        if self._parser is None:  # made on the first bytes: not while a burst of requests is written
            self._parser = _Parser(self._head_request)
        try:
            complete = self._parser.feed(data)
        except BadResponse as exc:
            self._fail(exc)
            self.close()
            return
        if complete:
            waiter, parser = self._waiter, self._parser
            self._waiter = self._parser = None
            # answered before its request was all written: the rest's fate is unknown, the next would queue behind it
            if not parser.keep_alive or parser.buf or (self.transport is not None
                                                       and self.transport.get_write_buffer_size()):
                self.close()
            if not waiter.done():
                waiter.set_result(parser.response())

    def eof_received(self) -> bool | None:
        self.flush_held()
        if self._parser is not None and self._waiter is not None and self._parser.eof():
            waiter, parser = self._waiter, self._parser
            self._waiter = self._parser = None
            if not waiter.done():
                waiter.set_result(parser.response())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.flush_held()
        self.closed = True
        # only a clean close ends a read-to-close answer: a reset cuts it
        if exc is None and self._parser is not None and self._waiter is not None and self._parser.eof():
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
        self._parser = None
        self._head_request = head_request
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # what is still unwritten is dropped, not written to a server done with it
            else:
                self.transport.close()

    def usable(self) -> bool:
        """Idle and still in step: open, and nothing (bytes, a close) waits unread in its socket, as when the server
        closed it while the loop was busy and has not read the close yet (a POST written there would be lost)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)


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
        self._hold = _Hold()
        self._deadlines = _Deadlines(self._hold)

    async def request(self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                      raw_headers: bytes = b"", timeout_s: float) -> Response:
        """Send one request and read its response; raises an :class:`HttpError` subclass on failure.

        ``raw_headers``: header lines already encoded (``Name: value\\r\\n`` each, values free of CR
        and LF), sent after the client's fixed headers and before ``headers``.
        """
        if self._closed:
            raise ConnectFailed("client closed")
        head = [f"{method} {self.base_path}{path} HTTP/1.1\r\n".encode("latin-1"), self._fixed, raw_headers]
        if headers:
            for k, v in headers.items():
                head.append(f"{k}: {_check(v)}\r\n".encode("latin-1"))
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d\r\n\r\n" % len(body))
            head.append(body)
        else:
            head.append(b"\r\n")
        payload = b"".join(head)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        conn = await self._acquire(deadline)
        try:
            waiter = conn.send(payload, method == "HEAD")
            self._deadlines.add(loop, timeout_s, deadline, waiter)
            response = await waiter
        except BaseException:
            conn.close()
            self._release(conn)
            raise
        self._release(conn)
        return response

    async def _acquire(self, deadline: float) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
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
                    lambda: _Connection(self._hold), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None),
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

    def hold_answers(self) -> None:
        """Until :meth:`release_answers`, bytes that arrive are kept unread: while a burst of requests is
        written, the answers to its first ones do not interleave their parsing with the later sends."""
        self._hold.active = True

    def release_answers(self) -> None:
        """Stop holding and process what was held."""
        self._hold.active = False
        self._hold.flush()

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


class _Deadlines:
    """Request timeouts with one loop timer in all, not one per request (a timer's start and cancel
    cost as much as a fan-out POST's own Python work). Requests with the same timeout end in the order
    they started, so each timeout value keeps a FIFO of (deadline, waiter); the timer is set for the
    earliest unanswered head."""

    def __init__(self, hold: _Hold) -> None:
        self._hold = hold
        self._queues: dict[float, deque[tuple[float, asyncio.Future[Response]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._when = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._graced = False

    def add(self, loop: asyncio.AbstractEventLoop, timeout_s: float, deadline: float,
            waiter: asyncio.Future[Response]) -> None:
        """Fail ``waiter`` with :class:`ResponseTimeout` if it is not done by ``deadline`` (loop time)."""
        if self._loop is not loop:  # a client reused on another loop: the old one's timer is gone
            self._queues.clear()
            self._timer = None
            self._loop = loop
        queue = self._queues.get(timeout_s)
        if queue is None:
            queue = self._queues[timeout_s] = deque()
        while queue and queue[0][1].done():  # answered heads: drop them as we go
            queue.popleft()
        queue.append((deadline, waiter))
        if self._timer is None or deadline < self._when:
            self._schedule(loop, deadline)

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._when = when
        self._timer = loop.call_at(when, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._graced and loop.time() - self._when > _STALL_S:
            # the loop runs due timers before it polls the sockets, and after a stop (SIGSTOP, a VM pause) its
            # first poll returns nothing: without this grace every request in flight across the stop timed
            # out, answered or not, and counted as a venue failure towards the circuit breaker
            self._graced = True
            self._schedule(loop, loop.time() + _STALL_GRACE_S)
            return
        self._graced = False
        self._hold.flush()  # an answer that arrived is never reported as a timeout
        now = loop.time() + _TIMER_SLACK_S
        earliest: float | None = None
        for timeout_s, queue in list(self._queues.items()):
            while queue and (queue[0][1].done() or queue[0][0] <= now):
                _, waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_exception(ResponseTimeout("no complete response in time"))
            if not queue:
                del self._queues[timeout_s]
            elif earliest is None or queue[0][0] < earliest:
                earliest = queue[0][0]
        if earliest is not None:
            self._schedule(loop, earliest)

    @property
    def tracked(self) -> int:
        """Requests still in the queues (answered ones leave lazily)."""
        return sum(len(q) for q in self._queues.values())


def _check(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("header values must not contain CR or LF")
    return value
