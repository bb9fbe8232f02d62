"""The stamped TCP server's connection handling on loopback: half-closes, handler failures, accept failures."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sim.httpserve import HttpServer, Request, Response, json_response
from sim.rxstamp import StampedServer, StampedTransport

pytestmark = pytest.mark.integration

BIG = 16 * 1024 * 1024  # more than loopback's socket buffers take at once


async def test_a_peer_half_close_still_gets_the_answer_buffered_for_it() -> None:
    """A client that shuts its sending side after its request (``nc -N``, HTTP/1.0 tools) gets the whole
    answer: end of input closes the connection once what was written is sent."""

    def handler(req: Request) -> Response:
        return Response(200, b"x" * BIG, b"text/plain")

    server = HttpServer(handler)
    port = await server.start()

    def client() -> int:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)  # answered: part sent, the rest still in the server's write buffer
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            got = 0
            while data := s.recv(1 << 20):
                got += len(data)
            return got

    try:
        received = await asyncio.to_thread(client)
    finally:
        await server.stop()
    assert received > BIG  # the head and the whole body, then the close


class Failing:
    """A connection handler with a bug."""

    def connection_made(self, transport: StampedTransport) -> None:
        self.transport = transport

    def stamped_data_received(self, data: bytes, stamp_ns: int) -> None:
        raise ValueError("handler bug")

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def test_a_handler_failure_closes_its_connection_and_not_the_server() -> None:
    server = StampedServer(Failing)
    port = server.listen("127.0.0.1", 0, 16)

    def client() -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"hello")
            s.settimeout(5)
            return s.recv(4096)

    try:
        assert await asyncio.to_thread(client) == b""  # closed, not left open and silent
        assert await asyncio.to_thread(client) == b""  # and the server still accepts
    finally:
        server.close()


async def test_localhost_and_the_wildcard_address_are_resolved() -> None:
    for host in ("localhost", ""):
        server = HttpServer(lambda req: json_response({}), host=host)
        port = await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            await server.stop()


_EMFILE_CHILD = textwrap.dedent("""
    import asyncio, os, resource, sys, time
    sys.path.insert(0, {root!r})
    from sim.httpserve import HttpServer, json_response

    async def main():
        server = HttpServer(lambda req: json_response({{}}))
        port = await server.start()
        used = len(os.listdir("/proc/self/fd"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))  # two accepts, then EMFILE
        print(port, flush=True)
        await asyncio.sleep(0.5)  # the parent connects 6 clients meanwhile
        cpu = time.process_time()
        await asyncio.sleep(1.0)
        print(round(time.process_time() - cpu, 3), flush=True)
        await server.stop()

    asyncio.run(main())
""")


def test_accept_failing_for_lack_of_file_descriptors_does_not_spin_the_loop() -> None:
    """The connection accept() could not take stays queued, so the listener stays readable: accepting
    pauses instead of being retried on every turn of the loop."""
    root = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen([sys.executable, "-c", _EMFILE_CHILD.format(root=root)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    clients = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(6):
            clients.append(socket.create_connection(("127.0.0.1", port)))  # completed by the kernel's backlog
        cpu_s = float(child.stdout.readline())
        assert child.wait(10) == 0
    finally:
        for c in clients:
            c.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert cpu_s < 0.3  # CPU seconds over 1 s of waiting (a spinning loop burns ~1)
