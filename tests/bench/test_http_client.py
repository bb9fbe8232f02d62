"""The benchmarks' lean HTTP/1.1 client against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from bench._http import HttpError, HttpPool


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[str]]]:
    peers: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(str(request.transport.get_extra_info("peername") if request.transport else None))
        body = await request.read()
        return web.json_response({"method": request.method, "path": request.path_qs, "body": body.decode(),
                                  "auth": request.headers.get("Authorization", "")})

    async def chunked(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(status=201)
        reply.enable_chunked_encoding()
        await reply.prepare(request)
        for part in (b"abc", b"", b"x" * 70_000, b"end"):
            if part:
                await reply.write(part)
        await reply.write_eof()
        return reply

    async def closing(_request: web.Request) -> web.Response:
        return web.Response(status=404, text="gone", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close", closing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, peers
    finally:
        await runner.cleanup()


async def test_requests_reuse_one_keep_alive_connection(server: tuple[int, list[str]]) -> None:
    port, peers = server
    http = HttpPool("127.0.0.1", port)
    try:
        status, body = await http.request("POST", "/echo?x=1", b"Authorization: Bearer t\r\n", b'{"a": 1}')
        assert status == 200
        assert orjson.loads(body) == {"method": "POST", "path": "/echo?x=1", "body": '{"a": 1}', "auth": "Bearer t"}
        for _ in range(5):
            assert (await http.request("GET", "/echo"))[0] == 200
        assert len(set(peers)) == 1
    finally:
        http.close()


async def test_chunked_replies_are_reassembled(server: tuple[int, list[str]]) -> None:
    http = HttpPool("127.0.0.1", server[0])
    try:
        status, body = await http.request("GET", "/chunked")
        assert status == 201
        assert body == b"abc" + b"x" * 70_000 + b"end"
        assert (await http.request("GET", "/echo"))[0] == 200  # the connection is in step afterwards
    finally:
        http.close()


async def test_connection_close_opens_a_new_connection_and_concurrency_opens_more(
        server: tuple[int, list[str]]) -> None:
    port, peers = server
    http = HttpPool("127.0.0.1", port, limit=8)
    try:
        assert await http.request("GET", "/close") == (404, b"gone")
        await http.request("GET", "/echo")
        await asyncio.gather(*(http.request("GET", "/echo") for _ in range(8)))
        assert len(set(peers)) >= 2
    finally:
        http.close()


async def test_a_refused_connection_raises() -> None:
    http = HttpPool("127.0.0.1", 1)
    with pytest.raises(OSError):
        await http.request("GET", "/")
    assert HttpError  # the parse/connection-lost error type is exported for callers
