"""The HTTP/1.1 client over TLS: real TLS servers on loopback with certificates made here by ``openssl``
(a CA of this test and a server certificate it signed for ``localhost``), each test on asyncio's loop and
on uvloop's (the services' loop, whose TLS is its own)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop
from aiohttp import web

from common.http1 import BadResponse, ConnectFailed, ConnectionDropped, Http1Client

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")]


@dataclass(frozen=True)
class Pki:
    """A CA certificate, and a certificate it signed for ``localhost`` with its key."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(tmp: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=tmp)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    _ca(tmp, "test-ca")
    _ca(tmp, "other-ca")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=tmp)
    (tmp / "ext.cnf").write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "test-ca.pem", "-CAkey", "test-ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=tmp)
    return Pki(tmp / "test-ca.pem", tmp / "server.pem", tmp / "server.key", tmp / "other-ca.pem")


Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on a new loop of either kind."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


def _server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    return ctx


def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"method": request.method, "len": len(body), "host": request.host,
                              "key": request.headers.get("Idempotency-Key", "")})


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b'{"a":', b' 1', b"}"):
        await resp.write(part)
        await asyncio.sleep(0.01)
    await resp.write_eof()
    return resp


@contextlib.asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    """An aiohttp server with the ``localhost`` certificate on 127.0.0.1; yields its port."""
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/chunked", _chunked)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_server_context(pki))
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def test_posts_over_tls_verified_against_the_given_ca_on_one_kept_connection(pki: Pki, run: Run) -> None:
    async def body() -> None:
        async with tls_server(pki) as port:
            client = Http1Client(f"https://localhost:{port}", ssl_context=_trusting(pki.ca))
            try:
                for i in range(3):
                    resp = await client.request("POST", "/echo", body=b"x" * (1000 * i),
                                                raw_headers=b"Idempotency-Key: k\r\n", timeout_s=5)
                    assert resp.status == 200
                    assert orjson.loads(resp.body) == {"method": "POST", "len": 1000 * i, "host": f"localhost:{port}",
                                                       "key": "k"}
                assert client.open_connections == 1
                chunked = await client.request("GET", "/chunked", timeout_s=5)
                assert chunked.status == 200 and orjson.loads(chunked.body) == {"a": 1}
            finally:
                await client.close()

    run(body())


def test_concurrent_requests_over_tls_get_their_own_answers(pki: Pki, run: Run) -> None:
    async def body() -> None:
        async with tls_server(pki) as port:
            client = Http1Client(f"https://localhost:{port}", ssl_context=_trusting(pki.ca))
            try:
                answers = await asyncio.gather(*(client.request("POST", "/echo", body=b"y" * i, timeout_s=10)
                                                 for i in range(50)))
                assert [orjson.loads(a.body)["len"] for a in answers] == list(range(50))
            finally:
                await client.close()

    run(body())


@pytest.mark.parametrize("trust", ["system CAs", "another CA"])
def test_a_certificate_the_client_does_not_trust_fails_the_connect(pki: Pki, run: Run, trust: str) -> None:
    async def body() -> None:
        async with tls_server(pki) as port:
            ctx = None if trust == "system CAs" else _trusting(pki.other_ca)  # None: https gets the default context
            client = Http1Client(f"https://localhost:{port}", ssl_context=ctx)
            with pytest.raises(ConnectFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await client.request("GET", "/echo", timeout_s=5)
            assert client.open_connections == 0

    run(body())


def test_a_certificate_for_another_name_fails_the_connect(pki: Pki, run: Run) -> None:
    async def body() -> None:
        async with tls_server(pki) as port:
            client = Http1Client(f"https://127.0.0.1:{port}", ssl_context=_trusting(pki.ca))  # the cert names localhost
            with pytest.raises(ConnectFailed, match=r"IP address mismatch|hostname mismatch|doesn.t match"):
                await client.request("GET", "/echo", timeout_s=5)

    run(body())


def test_plain_http_to_a_tls_port_is_not_a_response(pki: Pki, run: Run) -> None:
    async def body() -> None:
        async with tls_server(pki) as port:
            client = Http1Client(f"http://localhost:{port}")
            with pytest.raises((BadResponse, ConnectionDropped)):
                await client.request("GET", "/echo", timeout_s=5)
            await client.close()

    run(body())


def test_a_response_read_to_the_close_of_a_tls_connection(pki: Pki, run: Run) -> None:
    """No Content-Length and no chunking: the body ends where the server closes the TLS connection."""
    run(_read_to_close(pki))


async def _read_to_close(pki: Pki) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=_server_context(pki))
    port = server.sockets[0].getsockname()[1]
    client = Http1Client(f"https://localhost:{port}", ssl_context=_trusting(pki.ca))
    try:
        resp = await client.request("GET", "/", timeout_s=5)
        assert (resp.status, resp.body) == (200, b"all of it")
        again = await client.request("GET", "/", timeout_s=5)  # on a new connection: that one was closed
        assert (again.status, again.body) == (200, b"all of it")
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
