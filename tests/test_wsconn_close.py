"""The callback websocket client against a scripted server speaking raw frames on loopback: a closing
handshake or a failed connection the server never ends with a TCP close, and messages cut at awkward bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from common.wsconn import WsConnection
from tests.helpers import eventually

pytestmark = pytest.mark.integration

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's accept-key suffix
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"") -> bytes:
    """One frame as a server writes it (``mask``: a broken server that masks)."""
    n = len(payload)
    bit = 0x80 if mask else 0
    size = (bytes([bit | n]) if n < 126 else bytes([bit | 126]) + struct.pack("!H", n) if n < 1 << 16
            else bytes([bit | 127]) + struct.pack("!Q", n))
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + size + mask + payload


async def _drain_forever(reader: asyncio.StreamReader, sink: list[bytes]) -> None:
    """Read what the client sends and never close the TCP connection."""
    while data := await reader.read(1 << 16):
        sink.append(data)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            await script(reader, writer)

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/ws"

    yield start
    for srv in servers:
        srv.close()


@pytest.mark.parametrize(("last", "code"), [
    (frame(0x8, struct.pack("!H", 1013) + b"slow consumer"), 1013),  # the venue's close, echoed
    (frame(0x8, b""), 1005),  # a close frame without a code
    (frame(0x1, b"masked", mask=b"abcd"), 1002),  # a server must not mask: the client fails the connection
    (frame(0x8, struct.pack("!H", 1000) + b"\xff\xfe"), 1007),  # a close reason that is not UTF-8
], ids=["close-with-code", "close-without-code", "masked-frame", "close-reason-not-utf8"])
async def test_a_closing_connection_the_server_leaves_open_is_dropped_soon(
        scripted: Callable[[Script], Awaitable[str]], last: bytes, code: int) -> None:
    """After a close frame (or a frame that fails the connection) the client waits for the server to close
    TCP; a server that does not must not leave the feed on a dead socket until the stall watchdog fires
    (15-30 s of missed trades and a false FEED_STALLED)."""
    from_client: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(0x1, b"hello") + last)
        await _drain_forever(reader, from_client)

    got: list[str | bytes] = []
    conn = await WsConnection.connect(await scripted(script), lambda m, _t: got.append(m), close_timeout_s=0.3)
    try:
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert got == ["hello"] and conn.close_code_sent == code
    finally:
        conn.abort()


async def test_a_message_cut_at_every_seventh_byte_with_pings_inside_arrives_whole(
        scripted: Callable[[Script], Awaitable[str]]) -> None:
    """A fragmented text message with pings between its fragments (answered at once), a 64-bit length,
    then a text frame that is not UTF-8 (handed over as bytes) and a binary one."""
    body = b"x" * 70_000
    wire = (frame(0x1, b"ab", fin=False) + frame(0x9, b"p1") + frame(0x0, body, fin=False) + frame(0x9, b"p2")
            + frame(0x0, "é".encode()) + frame(0x1, b"\xff\xfe") + frame(0x2, b"bin"))
    from_client: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(wire), 7):
            writer.write(wire[i:i + 7])
            if i % 7_000 == 0:
                await writer.drain()
        await _drain_forever(reader, from_client)

    got: list[str | bytes] = []
    conn = await WsConnection.connect(await scripted(script), lambda m, _t: got.append(m))
    try:
        await eventually(lambda: len(got) == 3)
        assert got == ["ab" + "x" * 70_000 + "é", b"\xff\xfe", b"bin"]
        await eventually(lambda: len(b"".join(from_client)) == 2 * (2 + 4 + 2))  # two masked pongs
        assert not conn.closed
    finally:
        await conn.close(timeout_s=0.1)
