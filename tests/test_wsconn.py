"""The callback websocket client against a real websockets server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from common.wsconn import WsConnection
from tests.helpers import eventually

Handler = Callable[[ServerConnection], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[Any] = []

    async def start(handler: Handler) -> str:
        srv = await serve(handler, "127.0.0.1", 0, compression=None)
        servers.append(srv)
        port = next(iter(srv.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


@pytest.mark.integration
async def test_messages_arrive_in_order_whole_and_typed(server: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("first")
        await ws.send(["frag", "mented"])  # one message in three frames
        await ws.send(b"\x00\x01")
        await ws.send(b"\xff\xfe")  # binary stays bytes
        await ws.wait_closed()

    got: list[tuple[str | bytes, int]] = []
    conn = await WsConnection.connect(await server(handler), lambda m, t: got.append((m, t)))
    try:
        await eventually(lambda: len(got) == 4)
        assert [m for m, _ in got] == ["first", "fragmented", b"\x00\x01", b"\xff\xfe"]
        assert all(t > 0 for _, t in got)
    finally:
        await conn.close()


@pytest.mark.integration
async def test_pings_are_answered_and_sent_text_arrives(server: Callable[[Handler], Awaitable[str]]) -> None:
    received: list[str | bytes] = []
    ponged = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        ponged.set()
        received.append(await ws.recv())
        await ws.wait_closed()

    conn = await WsConnection.connect(await server(handler), lambda _m, _t: None)
    try:
        await asyncio.wait_for(ponged.wait(), 5)
        conn.send_text("PING")
        await eventually(lambda: received == ["PING"])
    finally:
        await conn.close()


@pytest.mark.integration
async def test_server_close_and_oversized_message_end_the_connection(
        server: Callable[[Handler], Awaitable[str]]) -> None:
    async def closes(ws: ServerConnection) -> None:
        await ws.close()

    conn = await WsConnection.connect(await server(closes), lambda _m, _t: None)
    await asyncio.wait_for(conn.wait_closed(), 5)

    async def floods(ws: ServerConnection) -> None:
        await ws.send("x" * 5000)
        await ws.wait_closed()

    got: list[str | bytes] = []
    conn = await WsConnection.connect(await server(floods), lambda m, _t: got.append(m), max_size=1000)
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert conn.close_code_sent == 1009 and got == []


@pytest.mark.integration
async def test_a_server_that_is_not_a_websocket_fails_the_connect() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(http, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Exception):  # noqa: B017 - the library's handshake error, whichever it is
            await WsConnection.connect(f"ws://127.0.0.1:{port}/", lambda _m, _t: None, open_timeout_s=5)
    finally:
        srv.close()
        await srv.wait_closed()


def _on_uvloop_after_abort(then: Callable[[WsConnection], Awaitable[None]]) -> None:
    """On uvloop (the services' loop): connect to a server that waits, abort the socket, then run ``then``."""
    import uvloop

    async def scenario() -> None:
        async def handler(ws: ServerConnection) -> None:
            await ws.wait_closed()

        srv = await serve(handler, "127.0.0.1", 0, compression=None)
        try:
            port = next(iter(srv.sockets)).getsockname()[1]
            conn = await WsConnection.connect(f"ws://127.0.0.1:{port}/ws", lambda _m, _t: None)
            conn.abort()
            await asyncio.sleep(0.05)  # the transport's handle is closed on the next turns of the loop
            await then(conn)
            assert conn.closed
        finally:
            srv.close()
            await srv.wait_closed()

    uvloop.run(scenario())


def test_closing_an_aborted_connection_does_nothing_on_uvloop() -> None:
    """The stall watchdog aborts the socket and the feed loop closes it afterwards: on uvloop (the services'
    loop) writing the closing frame to the aborted socket raised, and every stall was logged as a failed
    connection."""

    async def close(conn: WsConnection) -> None:
        await conn.close()  # as in the feeds: the session's tasks end before the close

    _on_uvloop_after_abort(close)


@pytest.mark.integration
def test_sending_on_an_aborted_connection_is_ignored_on_uvloop() -> None:
    """The stall watchdog aborts the socket; until the feed's session ends, a watch-set change still sends its
    subscribe on it: on uvloop that raised RuntimeError into ingest's watch-set follower instead of being
    ignored (the reconnect subscribes everything wanted)."""

    async def send(conn: WsConnection) -> None:
        conn.send_text('{"operation": "subscribe"}')

    _on_uvloop_after_abort(send)
