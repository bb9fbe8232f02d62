"""Shared websocket-server plumbing for the simulated feeds (aiohttp): clients, queues, faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)


class WsClient:
    """One connected client: an outgoing queue drained by its own sender task."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.subs: set[Any] = set()
        self.sent = 0

    def send(self, data: str | bytes) -> None:
        """Queue one frame."""
        self.queue.put_nowait(data)

    async def run_sender(self) -> None:
        """Send queued frames in order until the client goes away; what is queued together goes out in
        one socket write, as a venue's TCP stack would coalesce a burst (one write per frame cost the
        simulator ~10 µs a frame, on the same two cores as the system it drives)."""
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            end = batch.index(None) if None in batch else len(batch)
            await self._send_all(batch[:end])  # type: ignore[arg-type]
            if end < len(batch):
                return

    async def _send_all(self, frames: list[str | bytes]) -> None:
        writer = getattr(self.ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        if len(frames) < 2 or transport is None or transport.is_closing():
            for item in frames:
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item)
                self.sent += 1
            return
        transport.write(b"".join(ws_frame(item) for item in frames))
        self.sent += len(frames)
        protocol = getattr(writer, "protocol", None)
        if protocol is not None and getattr(protocol, "_paused", False):
            await protocol._drain_helper()


def ws_frame(payload: str | bytes) -> bytes:
    """One unmasked, uncompressed server frame (RFC 6455 §5.2): text for ``str``, binary for ``bytes``."""
    if isinstance(payload, str):
        data, opcode = payload.encode(), 0x81
    else:
        data, opcode = payload, 0x82
    n = len(data)
    if n < 126:
        header = bytes((opcode, n))
    elif n < 1 << 16:
        header = bytes((opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((opcode, 127)) + n.to_bytes(8, "big")
    return header + data


class WsServer:
    """An aiohttp app with one websocket route; subclasses handle text and decide what to send."""

    def __init__(self) -> None:
        self.clients: set[WsClient] = set()
        self.connections = 0
        self.stalled = False
        self.held = 0  # handshakes left unanswered by :meth:`hold`, waiting now
        self._open = asyncio.Event()
        self._open.set()
        self._closing = False
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.received: list[str] = []

    def routes(self, app: web.Application) -> None:
        """Add routes (default: the websocket on every path)."""
        app.router.add_get("/{tail:.*}", self.handle_ws)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port."""
        self._closing = False
        app = web.Application()
        self.routes(app)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.port = int(self.runner.addresses[-1][1])
        return self.port

    async def stop(self) -> None:
        """Close every client and stop listening."""
        self._closing = True
        self._open.set()  # a held handshake is refused now
        await self.disconnect_all()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """Accept a websocket and feed its text frames to :meth:`on_text`."""
        if not self._open.is_set():
            self.held += 1
            try:
                await self._open.wait()
            finally:
                self.held -= 1
            if self._closing:
                return web.Response(status=503)
        ws = web.WebSocketResponse(max_msg_size=64 << 20, compress=False)
        await ws.prepare(request)
        client = WsClient(ws)
        self.clients.add(client)
        self.connections += 1
        sender = asyncio.create_task(client.run_sender())
        try:
            await self.on_connect(client)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.received.append(msg.data[:2000])
                    await self.on_text(client, msg.data)
        except Exception:  # a client bug must not kill the server
            log.exception("sim websocket handler failed")
        finally:
            self.clients.discard(client)
            client.queue.put_nowait(None)
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
        return ws

    async def on_connect(self, client: WsClient) -> None:
        """Hook: a client connected."""

    async def on_text(self, client: WsClient, text: str) -> None:
        """Hook: a text frame arrived."""

    def send_raw(self, data: str | bytes) -> None:
        """Fault: send any frame (malformed JSON, random bytes, huge text) to every client."""
        for client in list(self.clients):
            client.send(data)

    def stall(self) -> None:
        """Fault: stop sending data while the sockets stay open (keep-alive replies continue)."""
        self.stalled = True

    def resume(self) -> None:
        """End a stall."""
        self.stalled = False

    def hold(self) -> None:
        """Fault: leave new connections' handshakes unanswered (a client stays disconnected) until :meth:`release`."""
        self._open.clear()

    def release(self) -> None:
        """Answer the held handshakes and every new one again."""
        self._open.set()

    async def disconnect_all(self) -> None:
        """Fault: close every client socket."""
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.ws.close()

    async def wait_clients(self, n: int = 1, *, timeout_s: float = 10.0,
                           ready: Callable[[WsClient], bool] = lambda _c: True) -> None:
        """Wait until ``n`` clients are connected (and ``ready``)."""
        async def check() -> None:
            while sum(1 for c in self.clients if ready(c)) < n:  # noqa: ASYNC110 - polled set
                await asyncio.sleep(0.01)

        await asyncio.wait_for(check(), timeout_s)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
