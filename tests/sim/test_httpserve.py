"""The simulator's small HTTP/1.1 server against real clients on loopback (raw sockets and aiohttp)."""

from __future__ import annotations

import asyncio
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
