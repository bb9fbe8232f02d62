"""The simulator's small HTTP/1.1 server against real clients on loopback (raw sockets and aiohttp)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from sim.httpserve import HttpServer, Request, Response, json_response

pytestmark = pytest.mark.integration


class Echo:
    """Answers every request with what it saw; ``/slow`` answers after a delay."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def __call__(self, req: Request) -> Response | asyncio.Future[Response]:
        self.seen.append(req)
        doc = {"method": req.method, "path": req.path, "query": req.query, "body": req.body.decode(),
               "x": req.headers.get("x-tag", "")}
        if req.path == "/slow":
            return asyncio.ensure_future(_after(0.1, json_response(doc)))
        if req.path == "/boom":
            raise RuntimeError("handler bug")
        return json_response(doc, 201 if req.method == "PUT" else 200)


async def _after(delay: float, resp: Response) -> Response:
    await asyncio.sleep(delay)
    return resp


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, Echo]]:
    echo = Echo()
    server = HttpServer(echo)
    await server.start()
    yield server, echo
    await server.stop()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, body


async def test_aiohttp_client_round_trips(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{server.port}/a%20b?x=1&y=", data=b'{"k":1}') as r:
            assert r.status == 200
            assert await r.json() == {"method": "POST", "path": "/a b", "query": {"x": "1", "y": ""},
                                      "body": '{"k":1}', "x": ""}
        async with s.put(f"http://127.0.0.1:{server.port}/p", data=b"z", headers={"X-Tag": "t"}) as r:
            assert r.status == 201 and (await r.json())["x"] == "t"
        async with s.get(f"http://127.0.0.1:{server.port}/boom") as r:
            assert r.status == 500


async def test_pipelined_requests_answer_in_order_behind_a_held_one(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                 b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    await writer.drain()
    paths = []
    for _ in range(3):
        status, _headers, body = await _read_response(reader)
        assert status == 200
        paths.append((orjson.loads(body)["path"], orjson.loads(body)["body"]))
    assert paths == [("/slow", ""), ("/fast", "hi"), ("/chunked", "abcde")]
    writer.write(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = await _read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    assert await reader.read() == b""  # the server closed the connection
    writer.close()


async def test_arrival_is_when_the_first_bytes_came_not_when_the_request_completed(
        served: tuple[HttpServer, Echo]) -> None:
    server, echo = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    before = time.time_ns()
    writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    await writer.drain()
    await asyncio.sleep(0.05)
    resumed = time.time_ns()
    writer.write(b"cd")
    await _read_response(reader)
    assert before <= echo.seen[0].arrival_ns < resumed and echo.seen[0].body == b"abcd"
    # the next request on the same connection gets its own stamp
    await asyncio.sleep(0.01)
    second = time.time_ns()
    writer.write(b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")
    await _read_response(reader)
    assert echo.seen[1].arrival_ns >= second
    writer.close()


@pytest.mark.parametrize(("raw", "status"), [
    (b"NONSENSE\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),  # a digit to str.isdigit, not to int()
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\nab\r\n0\r\n\r\n", 400),
])
async def test_malformed_requests_get_an_error_and_a_closed_connection(
        served: tuple[HttpServer, Echo], raw: bytes, status: int) -> None:
    server, echo = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    got, headers, _ = await _read_response(reader)
    assert got == status and headers["connection"] == "close" and not echo.seen
    assert await reader.read() == b""
    writer.close()


async def test_stop_closes_held_connections(served: tuple[HttpServer, Echo]) -> None:
    server, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.01)
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    writer.close()


def _raw_post(path: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}").encode()


async def test_arrival_is_when_the_kernel_received_the_bytes_not_when_the_busy_server_read_them() -> None:
    """A request that comes in while the server is busy serving another connection keeps the time its
    bytes arrived (stamped by the kernel), not the later time the server got round to reading them."""
    busy_s = 0.3
    seen: list[tuple[Request, int]] = []

    def handler(req: Request) -> Response:
        seen.append((req, time.time_ns()))
        if req.path == "/busy":
            end = time.monotonic() + busy_s
            while time.monotonic() < end:  # the server's own work, holding its loop
                pass
        return json_response({})

    server = HttpServer(handler)
    port = await server.start()
    sent_ns: list[int] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port)) as busy, \
                socket.create_connection(("127.0.0.1", port)) as later:
            for sock in (busy, later):  # warm up: both accepted, timestamping switched on
                sock.sendall(_raw_post("/warm"))
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            busy.sendall(_raw_post("/busy"))
            time.sleep(0.1)  # the server is inside /busy now
            sent_ns.append(time.time_ns())
            later.sendall(_raw_post("/later"))
            for sock in (busy, later):
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")

    try:
        await asyncio.to_thread(client)
    finally:
        await server.stop()
    (later, served_ns), = [(r, t) for r, t in seen if r.path == "/later"]
    assert served_ns - sent_ns[0] > 0.1e9  # read only once /busy was done
    assert later.arrival_ns - sent_ns[0] < 0.05e9
