"""Keep-alive reuse against servers scripted byte by byte on loopback: an answer is only ever read as the answer to
the request it came for, and a connection the server already closed does not eat a POST."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator

import pytest

from common.http1 import ConnectionDropped, Http1Client
from tests.helpers import eventually, eventually_sync

pytestmark = pytest.mark.integration

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(script: Script) -> tuple[asyncio.Server, str, list[int]]:
    """A server running ``script`` on each connection; the list counts connections."""
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await script(reader, writer)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", conns


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def _answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def test_a_stray_answer_on_an_idle_connection_while_answers_are_held_is_not_the_next_posts_answer() -> None:
    """A burst holds answers unread; meanwhile an idle kept connection receives a second, unsolicited response (a
    server bug, a 408 before closing). The old client held those bytes too, reused the connection for the next POST
    and, on release, read the stray response as that POST's answer (another order's fill booked to this one)."""
    posted, stray_due = asyncio.Event(), asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(conns) == 1:
            await _read_request(reader)
            writer.write(_answer(b"first"))
            await stray_due.wait()
            writer.write(_answer(b"STRAY"))  # nobody asked
        await _read_request(reader)
        posted.set()
        writer.write(_answer(b"mine"))
        await asyncio.sleep(5)

    srv, url, conns = await _serve(script)
    client = Http1Client(url)
    assert (await client.request("GET", "/", timeout_s=2)).body == b"first"
    client.hold_answers()
    stray_due.set()
    # the stray answer arrives while the connection is idle: in its socket, read and held, or the connection dropped
    await eventually(lambda: not client._idle or not client._idle[0].usable() or client._idle[0]._held, timeout_s=2)
    task = asyncio.create_task(client.request("POST", "/v1/orders", body=b"{}", timeout_s=2))
    await asyncio.wait_for(posted.wait(), 2)
    client.release_answers()
    answer = await task
    assert answer.body == b"mine"
    assert len(conns) == 2  # the out-of-step connection was dropped, the POST went on a new one
    await client.close()
    srv.close()


class _ClosingServer:
    """A plain-socket server on its own thread: answers the first request of a connection, closes it on
    :attr:`close_idle`, and answers every request of later connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.close_idle = threading.Event()
        self.closed = threading.Event()
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _read(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        self.requests.append(data.split(b"\r\n", 1)[0])
        return data

    def _run(self) -> None:
        first = True
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while self._read(conn):
                    conn.sendall(_answer(b"ok"))
                    if first:
                        first = False
                        self.close_idle.wait(5)
                        break  # the server's idle timeout: the kept connection is closed
            self.closed.set()


@pytest.fixture
def closing_server() -> Iterator[_ClosingServer]:
    srv = _ClosingServer()
    yield srv
    srv.sock.close()


async def test_a_post_is_not_written_to_a_kept_connection_the_server_already_closed(
        closing_server: _ClosingServer) -> None:
    """The server closed the idle connection, but the loop was busy (a burst being prepared) and has not read the
    close yet. The old client wrote the POST into the dead connection: ConnectionDropped, an order POST the venue
    never saw treated as one it may have taken."""
    client = Http1Client(closing_server.url)
    assert (await client.request("GET", "/warm", timeout_s=2)).body == b"ok"
    closing_server.close_idle.set()
    assert closing_server.closed.wait(5)  # (blocking: the loop stands still while the close lands, unread)
    sock = client._idle[0].transport.get_extra_info("socket")  # type: ignore[union-attr]
    eventually_sync(lambda: select.select([sock], [], [], 0)[0], timeout_s=2)  # the close waits unread in the socket
    answer = await client.request("POST", "/v1/orders", body=b"{}", timeout_s=2)
    assert answer.body == b"ok"
    assert closing_server.requests == [b"GET /warm HTTP/1.1", b"POST /v1/orders HTTP/1.1"]
    await client.close()


async def test_a_read_to_close_answer_cut_by_a_reset_is_dropped_not_complete() -> None:
    """An answer framed by the connection's close ends only at a clean close: a reset in the middle of its body
    left the old client with the first bytes of it as the whole answer."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"status": "mat')
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        writer.transport.abort()

    srv, url, _ = await _serve(script)
    client = Http1Client(url)
    with pytest.raises(ConnectionDropped):
        await client.request("GET", "/v1/orders/o1", timeout_s=2)
    await client.close()
    srv.close()


async def test_an_answer_with_both_lengths_is_read_chunked_and_its_connection_not_kept() -> None:
    """Content-Length and Transfer-Encoding together: the chunked framing is read, and since the two disagree on
    where the answer ends (a smuggling shape), the connection is not used for another request."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"2\r\nok\r\n0\r\n\r\n")

    srv, url, conns = await _serve(script)
    client = Http1Client(url)
    for _ in range(2):
        assert (await client.request("GET", "/", timeout_s=2)).body == b"ok"
    assert len(conns) == 2
    await client.close()
    srv.close()


async def test_a_connection_answered_before_its_request_was_written_is_not_reused() -> None:
    """The server answered after the head, before reading a large body, and reads no more of that connection. The
    old client kept the connection with the body's rest still queued and wrote the next POST behind it: the server
    never saw that POST, and the client reported a timeout (an order the venue does not have, made UNKNOWN)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(conns) == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(_answer(b"early"))
            await asyncio.sleep(5)  # reads nothing more here
            return
        await _read_request(reader)
        writer.write(_answer(b"second"))
        await asyncio.sleep(5)

    srv, url, conns = await _serve(script)
    client = Http1Client(url)
    first = await client.request("POST", "/v1/upload", body=b"x" * 20_000_000, timeout_s=5)
    assert first.body == b"early"
    second = await client.request("POST", "/v1/orders", body=b"{}", timeout_s=1)
    assert second.body == b"second" and len(conns) == 2
    await client.close()
    srv.close()
