"""HTTP/1.x response parsing and the errors of :mod:`common.http1` (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

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
