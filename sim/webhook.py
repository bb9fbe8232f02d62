"""A webhook receiver standing in for Slack (or any alert endpoint): it records the alerts POSTed to it, checks
their signature, and on demand answers 5xx or hangs, so the engine's alert delivery can be seen and tested.

``POST /`` (any path) takes a JSON body with a ``text`` (the Slack form) and answers 200 ``ok``; when a secret is
set, the ``X-TT-Signature`` header is checked (:func:`common.alerts.verify`) and a request without a valid one is
answered 401. ``fail_next`` answers that many requests ``fail_status``; ``hang()`` holds every request until
``release()``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from common.alerts import verify
from sim.httpserve import HttpServer, Request, Response


@dataclass(frozen=True, slots=True)
class Received:
    """One alert the receiver took."""

    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    signed: bool  # the signature verified with the receiver's secret
    received_ns: int

    @property
    def text(self) -> str:
        """The Slack text."""
        return str(self.body.get("text", ""))

    @property
    def alert(self) -> dict[str, Any]:
        """The alert's fields."""
        return dict(self.body.get("alert") or {})


@dataclass
class WebhookReceiver:
    """A local webhook on ``host:port`` (0: a free one)."""

    secret: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    fail_next: int = 0
    fail_status: int = 503
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    refused: int = 0
    _server: HttpServer | None = None
    _released: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://{self.host}:{self.port}/alerts"

    async def start(self) -> str:
        """Listen; returns the URL."""
        self._server = HttpServer(self._handle, host=self.host, port=self.port)
        self.port = await self._server.start()
        return self.url

    async def stop(self) -> None:
        """Stop listening (requests in flight are dropped)."""
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def hang(self) -> None:
        """Hold every request from now on until :meth:`release`."""
        self._released = asyncio.Event()

    def release(self) -> None:
        """Answer the held requests (and the next ones) again."""
        if self._released is not None:
            self._released.set()
            self._released = None

    def ids(self) -> list[str]:
        """The dedupe ids of the alerts received, in order."""
        return [str(r.alert.get("id", "")) for r in self.received]

    def _handle(self, req: Request) -> Response | Any:
        self.requests += 1
        if self._released is not None:
            return self._later(req, self._released)
        return self._answer(req)

    async def _later(self, req: Request, released: asyncio.Event) -> Response:
        await released.wait()
        return self._answer(req)

    def _answer(self, req: Request) -> Response:
        if req.method != "POST":
            return Response(405, b'{"error":"POST only"}')
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response(self.fail_status, b'{"error":"failing on purpose"}')
        signed = bool(self.secret) and verify(self.secret, req.headers.get("x-tt-timestamp", ""), req.body,
                                              req.headers.get("x-tt-signature", ""))
        if self.secret and not signed:
            self.refused += 1
            return Response(401, b'{"error":"bad signature"}')
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return Response(400, b'{"error":"not JSON"}')
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return Response(400, b'{"error":"no text"}')
        self.received.append(Received(body, req.body, dict(req.headers), signed, time.time_ns()))
        return Response(200, b"ok", b"text/plain")
