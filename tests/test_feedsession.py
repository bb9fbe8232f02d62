"""The feed session against a real websockets server on loopback: the application ping, the stall watchdog
(keep-alives counted or not), the reconnect backoff that starts over after a session that worked."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from common.feedsession import FeedSession
from common.retry import Backoff
from common.wsconn import WsConnection
from tests.helpers import eventually

log = logging.getLogger(__name__)
Venue = Callable[[ServerConnection], Awaitable[None]]


class Metrics:
    """The counters, by name."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def stall(self, feed: str) -> None:
        self.counts["stall"] += 1

    def reconnect(self, feed: str) -> None:
        self.counts["reconnect"] += 1

    def parse_error(self, feed: str, kind: str) -> None:
        self.counts[kind] += 1


@pytest.fixture
async def venue() -> AsyncIterator[Callable[[Venue], Awaitable[str]]]:
    servers: list[Any] = []

    async def start(handler: Venue) -> str:
        server = await serve(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _session(url: str, metrics: Metrics, data: list[str], **kw: Any) -> FeedSession:
    opened: list[WsConnection] = []

    async def on_open(conn: WsConnection) -> None:
        opened.append(conn)
        conn.send_text("subscribe")

    def handle(raw: str | bytes, _recv_ns: int) -> bool:
        if raw == "PONG":
            return False
        data.append(str(raw))
        return True

    return FeedSession(url, feed="test", log=log, handle=handle, on_open=on_open, metrics=metrics,
                       stall_log="test feed stalled", **kw)


async def _run(session: FeedSession, check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    task = asyncio.create_task(session.run())
    try:
        await eventually(check, timeout_s=timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.integration
@pytest.mark.parametrize("keepalive_counts", [True, False])
async def test_pongs_keep_the_session_alive_only_when_keepalives_count(
        venue: Callable[[Venue], Awaitable[str]], keepalive_counts: bool) -> None:
    received: list[str] = []

    async def pong_only(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(str(message))
            if message == "PING":
                await ws.send("PONG")

    metrics, data = Metrics(), []  # type: ignore[var-annotated]
    session = _session(await venue(pong_only), metrics, data, ping_interval_s=0.05, stall_s=0.5,
                       keepalive_counts=keepalive_counts, backoff=Backoff(0.01, 0.02))
    await _run(session, lambda: received.count("PING") >= 20)  # a second of pings: two stall windows
    assert received[0] == "subscribe" and data == []
    if keepalive_counts:
        assert (metrics.counts["stall"], session.connections) == (0, 1)
    else:
        assert metrics.counts["stall"] >= 1 and session.connections >= 2


@pytest.mark.integration
async def test_the_backoff_starts_over_after_a_session_that_brought_data(
        venue: Callable[[Venue], Awaitable[str]]) -> None:
    async def one_message_then_close(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send("data")

    metrics, data = Metrics(), []  # type: ignore[var-annotated]
    # every delay is about the first step (0.1 s) when it starts over; growing, the fifth reconnect alone
    # would wait 0.8-1.6 s
    session = _session(await venue(one_message_then_close), metrics, data, backoff=Backoff(0.1, 30.0))
    started = asyncio.get_running_loop().time()
    await _run(session, lambda: session.connections >= 6)
    assert asyncio.get_running_loop().time() - started < 1.5
    assert len(data) >= 5 and metrics.counts["reconnect"] >= 5


@pytest.mark.integration
async def test_a_frame_beyond_the_size_limit_is_counted_and_the_feed_reconnects(
        venue: Callable[[Venue], Awaitable[str]]) -> None:
    async def too_large(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send("x" * 2048)
        await ws.wait_closed()

    metrics, data = Metrics(), []  # type: ignore[var-annotated]
    session = _session(await venue(too_large), metrics, data, max_size=1024, backoff=Backoff(0.01, 0.02))
    await _run(session, lambda: metrics.counts["TOO_LARGE"] >= 2)
    assert data == [] and session.connections >= 2
