"""A small HTTP/1.1 server on asyncio protocols, for the simulator's fakes.

Why not aiohttp: the Insiders fake shares the machine's two cores with the system it measures, and
aiohttp's server spends most of a POST's CPU in its request/response machinery (middleware chain,
``web.Request``, response preparation). This server parses a request in a few string operations and
answers a handler that returns a :class:`Response` synchronously without creating a task.

Every request carries ``arrival_ns``: when the kernel received it (:mod:`sim.rxstamp`; for a request
split over packets read together, its last part), so its arrival does not include the time it waited
behind the server's own work, on its connection or on others.

Scope: requests with ``Content-Length`` or chunked bodies, keep-alive (HTTP/1.1 unless
``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``), pipelined requests answered
in order (a handler returning an awaitable holds back the connection's later requests until it is
answered). Responses always carry ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

import orjson

from sim.rxstamp import StampedServer, StampedTransport

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclass(slots=True)
class Request:
    """One parsed request; header names are lower-case."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    arrival_ns: int

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last of a repeated name wins)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True)) if self.query_string else {}


@dataclass(frozen=True, slots=True)
class Response:
    """Status and body (JSON unless ``content_type`` says otherwise)."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"


def json_response(payload: object, status: int = 200) -> Response:
    """A JSON response."""
    return Response(status, orjson.dumps(payload))


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpServer:
    """Serves ``handler`` on ``host:port`` (0 = a free port); ``await start()`` returns the port."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0, backlog: int = 4096,
                 max_body_bytes: int = 1024 * 1024) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.backlog = backlog
        self.max_body_bytes = max_body_bytes
        self._server: StampedServer | None = None
        self._conns: set[_Conn] = set()

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self._server = StampedServer(lambda: _Conn(self))
        self.port = self._server.listen(self.host, self.port, self.backlog)
        return self.port

    async def stop(self) -> None:
        """Stop listening, close every connection and cancel handlers still running."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._conns):
            conn.abort()
        await asyncio.sleep(0)  # the connections' connection_lost calls (their handlers are cancelled)


class _Conn:
    """One client connection: incremental parsing, in-order answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: StampedTransport | None = None
        self.buf = bytearray()
        self.stamp = 0  # arrival of the first bytes of the request at the head of ``buf``
        self.waiting: deque[Request] | None = None  # set while an awaited answer holds the connection
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    # -- asyncio callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: StampedTransport) -> None:
        self.transport = transport
        self.server._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        self.transport = None
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def stamped_data_received(self, data: bytes, now: int) -> None:
        if not self.buf:
            self.stamp = now
        self.buf += data
        while self.buf and not self.closing:
            try:
                req = self._parse()
            except _BadRequest as exc:
                self._fail(exc.status, str(exc))
                return
            if req is None:
                return
            self.stamp = now  # bytes left in the buffer arrived with this call
            if self.waiting is not None:
                self.waiting.append(req)
            else:
                self._serve(req)

    def abort(self) -> None:
        """Close at once (server stop)."""
        if self.transport is not None:
            self.transport.abort()

    # -- parsing --------------------------------------------------------------------------------

    def _parse(self) -> Request | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise _BadRequest(431, "request head too large")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400, "bad header line")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, consumed = self._chunked(start)
            if body is None:
                return None
        else:
            length_text = headers.get("content-length", "0")
            if not (length_text.isascii() and length_text.isdigit()):
                raise _BadRequest(400, "bad Content-Length")
            length = int(length_text)
            if length > self.server.max_body_bytes:
                raise _BadRequest(413, "request body too large")
            if len(buf) < start + length:
                return None
            body = bytes(buf[start:start + length])
            consumed = start + length
        del buf[:consumed]
        path, _, query = target.partition("?")
        if "%" in path:
            path = unquote(path)
        connection = headers.get("connection", "").lower()
        if (version == "HTTP/1.0" and "keep-alive" not in connection) or "close" in connection:
            headers["connection"] = "close"
        return Request(method, path, query, headers, body, self.stamp)

    def _chunked(self, pos: int) -> tuple[bytes | None, int]:
        buf = self.buf
        body = bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None, 0
            digits = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            if not digits or digits.strip(_HEX_DIGITS):  # int(..., 16) would also take "-1", "+1", "1_0"
                raise _BadRequest(400, "bad chunk size")
            size = int(digits, 16)
            pos = eol + 2
            if size == 0:
                end = buf.find(b"\r\n\r\n", pos - 2)  # trailers end with an empty line
                if end < 0:
                    return None, 0
                return bytes(body), end + 4
            if len(body) + size > self.server.max_body_bytes:
                raise _BadRequest(413, "request body too large")
            if len(buf) < pos + size + 2:
                return None, 0
            body += buf[pos:pos + size]
            pos += size + 2

    # -- answering ------------------------------------------------------------------------------

    def _serve(self, req: Request) -> None:
        try:
            result = self.server.handler(req)
        except Exception:
            log.exception("handler failed", extra={"path": req.path})
            result = json_response({"error": "INTERNAL", "message": "handler failed"}, 500)
        if isinstance(result, Response):
            self._write(req, result)
            return
        self.waiting = deque()
        self.task = asyncio.get_running_loop().create_task(self._serve_later(req, result))

    async def _serve_later(self, req: Request, pending: Awaitable[Response]) -> None:
        try:
            self._write(req, await _answer(req, pending))
            while self.waiting and not self.closing:
                req = self.waiting.popleft()
                try:
                    result = self.server.handler(req)
                except Exception:
                    log.exception("handler failed", extra={"path": req.path})
                    result = json_response({"error": "INTERNAL", "message": "handler failed"}, 500)
                if not isinstance(result, Response):
                    result = await _answer(req, result)
                self._write(req, result)
        finally:
            self.waiting = None
            self.task = None

    def _write(self, req: Request, resp: Response) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        close = req.headers.get("connection") == "close"
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            resp.status, _REASONS.get(resp.status, b"Unknown"), resp.content_type, len(resp.body),
            b"Connection: close\r\n" if close else b"")
        transport.write(head + resp.body)
        if close:
            self.closing = True
            transport.close()

    def _fail(self, status: int, message: str) -> None:
        self.closing = True
        if self.transport is not None:
            body = orjson.dumps({"error": "BAD_REQUEST", "message": message})
            self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n%s" % (status, _REASONS.get(status, b"Error"),
                                                                   len(body), body))
            self.transport.close()


async def _answer(req: Request, pending: Awaitable[Response]) -> Response:
    try:
        return await pending
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("handler failed", extra={"path": req.path})
        return json_response({"error": "INTERNAL", "message": "handler failed"}, 500)
