"""HTTP/1.x response parsing and the errors of :mod:`common.http1` (no I/O here)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
_SIZE_LINE = -1  # chunked decoding: expecting a chunk-size line
_TRAILERS = -2  # chunked decoding: after the last chunk, reading trailers up to an empty line
_OWS = b" \t"
_MAX_LINE = 4096  # a chunk-size or trailer line
_STATUS = re.compile(rb"[1-5][0-9][0-9]")
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


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
        self._trailer_bytes = 0
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
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.0", b"HTTP/1.1") or not _STATUS.fullmatch(parts[1]):
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers = _headers(lines[1:])
        if status == 101:  # never asked for: what follows is not HTTP
            raise BadResponse("unexpected 101 Switching Protocols")
        if 100 <= status < 200:
            return True  # interim response: parse the next head
        self.status, self.headers, self._head_done = status, headers, True
        connection = headers.get("connection", "").lower()
        self.keep_alive = parts[0] == b"HTTP/1.1" and "close" not in connection
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower() != "chunked":  # the client asks for no other coding: its framing cannot be read
                raise BadResponse(f"unsupported Transfer-Encoding {coding[:40]!r}")
            if "content-length" in headers:  # two framings (a smuggling shape): read chunked, then do not reuse
                self.keep_alive = False
        if self._head_request or status in (204, 304):
            self._done = True
        elif coding is not None:
            self._chunked = True
        elif "content-length" in headers:
            text = headers["content-length"]
            if not _DIGITS.fullmatch(text):
                raise BadResponse(f"bad Content-Length {text[:40]!r}")
            self._length = int(text)
            if self._length > MAX_BODY_BYTES:
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
        if self._chunk_left in (_SIZE_LINE, _TRAILERS):
            end = self.buf.find(b"\r\n")
            if end < 0:
                if len(self.buf) > _MAX_LINE:
                    raise BadResponse("chunk size or trailer line too long")
                return False
            line = bytes(self.buf[:end])
            del self.buf[:end + 2]
            if self._chunk_left == _TRAILERS:
                self._trailer_bytes += end + 2
                if self._trailer_bytes > MAX_HEAD_BYTES:
                    raise BadResponse("trailers too large")
                self._done = not line
                return True
            size_text = line.split(b";", 1)[0].strip(_OWS)
            if not _HEX.fullmatch(size_text):
                raise BadResponse(f"bad chunk size {size_text[:20]!r}")
            self._chunk_left = int(size_text, 16)
            if self._chunk_left == 0:
                self._chunk_left = _TRAILERS
            elif len(self._body) + self._chunk_left > MAX_BODY_BYTES:
                raise BadResponse("body too large")
            return True
        if len(self.buf) < self._chunk_left + 2:
            return False
        if self.buf[self._chunk_left:self._chunk_left + 2] != b"\r\n":
            raise BadResponse("chunk data longer than its size")
        self._body += self.buf[:self._chunk_left]
        del self.buf[:self._chunk_left + 2]
        self._chunk_left = _SIZE_LINE
        return True


def _headers(lines: list[bytes]) -> dict[str, str]:
    """Lower-cased names to values (repeats joined with ", "; obs-fold lines unfolded into the field before)."""
    headers: dict[str, str] = {}
    last = ""
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # obs-fold: continues the previous field's value
            if not last:
                raise BadResponse(f"folded line with no field {line[:80]!r}")
            more = line.strip(_OWS).decode("latin-1")
            headers[last] = f"{headers[last]} {more}" if more else headers[last]
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadResponse(f"bad header line {line[:80]!r}")
        key = name.lower().decode("latin-1")
        val = value.strip(_OWS).decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
        last = key
    return headers
