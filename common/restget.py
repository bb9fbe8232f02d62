"""JSON GETs to the venue's REST APIs (CLOB, data-api) on aiohttp, the one library of the cold-path HTTP calls.

Why aiohttp (and not httpx, which ingest used before): measured on this machine against the Insiders fake
(GET of a wallet's balance, a warm keep-alive connection), one GET costs ~130 µs of client CPU in aiohttp and
~490 µs in httpx, and a burst of 100 concurrent GETs (the router's balance look-ups of one trade's followers)
ends after ~7 ms in aiohttp and ~80 ms in httpx (~40 ms and ~620 ms for 500). The router's market-info and
balance reads sit on its routing path; the same library serves ingest's polls for nothing. The executor's
order fan-out has its own client (:mod:`common.http1`).

Failures come back as exceptions of this module, whatever the library: :class:`RateLimited` (429),
:class:`HttpStatusError` (another status >= 400), :class:`RequestFailed` (no answer: connection, timeout);
a body that is not JSON raises :class:`~common.fields.ParseError` ``NOT_JSON``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from common.fields import NOT_JSON, ParseError


class RateLimited(Exception):
    """The server answered 429; ``retry_after_s`` is its hint (or our default)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class HttpStatusError(Exception):
    """A non-2xx answer other than 429."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


class RequestFailed(Exception):
    """No answer: the connection failed or dropped, or the request timed out."""


class BodyRecorder(Protocol):
    """Where raw REST bodies go when recording is on."""

    def write(self, feed: str, raw: str | bytes, recv_ns: int, meta: dict[str, Any] | None = None) -> None:
        """Record one raw body."""


class Bucket(Protocol):
    """A rate limit shared by the getters of one API."""

    def reserve(self, now_s: float) -> float:
        """Take a token; seconds to wait before using it."""

    def pause(self, until_s: float) -> None:
        """Hand out no token before ``until_s`` (the server said 429)."""


def retry_after(headers: Mapping[str, str], default_s: float) -> float:
    """Seconds from a Retry-After header (a number), else ``default_s``."""
    try:
        return max(float(headers.get("retry-after", "")), 0.5)
    except ValueError:
        return default_s


@dataclass
class Page:
    """One decoded response with when it arrived."""

    body: Any
    received_ns: int


class RestGetter:
    """GET JSON (through a rate limit when given one: a 429 pauses it and raises :class:`RateLimited`)."""

    def __init__(self, http: aiohttp.ClientSession, bucket: Bucket | None = None, *, feed: str,
                 recorder: BodyRecorder | None = None, on_status: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, default_backoff_s: float = 5.0,
                 timeout_s: float | None = None) -> None:
        self.http = http
        self.bucket = bucket
        self.feed = feed
        self.recorder = recorder
        self.on_status = on_status or (lambda _s: None)
        self.clock = clock
        self.default_backoff_s = default_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s is not None else http.timeout

    async def get(self, url: str, params: Mapping[str, str | int]) -> Page:
        """The decoded JSON body; raises RateLimited, HttpStatusError, RequestFailed or ParseError."""
        if self.bucket is not None:
            wait = self.bucket.reserve(self.clock())
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            async with self.http.get(url, params=params, timeout=self.timeout) as resp:
                content = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.on_status("error")
            raise RequestFailed(f"GET {url}: {exc!r}") from exc
        received_ns = time.time_ns()
        if self.recorder is not None:
            self.recorder.write(self.feed, content, received_ns, {"url": str(resp.url), "status": resp.status})
        if resp.status == 429:
            self.on_status("429")
            delay = retry_after(resp.headers, self.default_backoff_s)
            if self.bucket is not None:
                self.bucket.pause(self.clock() + delay)
            raise RateLimited(delay)
        if resp.status >= 400:
            self.on_status(str(resp.status))
            raise HttpStatusError(resp.status, content.decode(errors="replace"))
        self.on_status("ok")
        try:
            return Page(orjson.loads(content), received_ns)
        except orjson.JSONDecodeError:
            raise ParseError(NOT_JSON, f"{url} returned non-JSON") from None
