"""Real Envoy in front of the real control service on real PostgreSQL and Redis.

The package-scoped ``edge`` stack is shared by the edge tests: its own migrated database (created
from the session template), its own Redis database number, the control service as a subprocess
on a free port and Envoy (detached from the test's process group) on free ports. Tests that need
different settings start their own Envoy with ``start_envoy``.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.config import Secret, project_root
from common.embedded import free_port
from tests.helpers import INTERNAL_ENV, eventually_sync, redis_db, template_database
from tools import envoy_config

EDGE_REDIS_DB = 9


@dataclass
class Proc:
    """A subprocess started by a fixture, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; always reaps."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, argv: list[str], log: Path, env: Mapping[str, str]) -> Proc:
    """Start a detached subprocess (own session: a Ctrl-C on the tests never half-kills it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, cwd=project_root(), env=dict(env), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(name, popen, log)


def grpc_serving(port: int) -> bool:
    """Whether the gRPC server on ``port`` answers its health check SERVING."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def start_control(workdir: Path, db_url: str, redis_url: str, tokens: tuple[str, ...],
                  port: int | None = None) -> tuple[Proc, int]:
    """``python -m services.control`` on a free port; returns once its health check is SERVING."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update({
        **INTERNAL_ENV, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "CONTROL_API_TOKEN": ",".join(tokens),
        "TT_CONTROL_GRPC_PORT": str(port), "TT_RUN_DIR": str(workdir / "run"),
    })
    proc = spawn("control", [sys.executable, "-m", "services.control"], workdir / "control.log", env)

    def serving() -> bool:
        assert proc.alive(), f"control exited with {proc.popen.returncode}:\n{proc.log_tail()}"
        return grpc_serving(port)

    try:
        eventually_sync(serving, timeout_s=30, interval_s=0.05, message="control SERVING")
    except AssertionError:
        proc.stop()
        raise
    return proc, port


@dataclass
class Envoy:
    """A running Envoy and how to reach it."""

    proc: Proc
    settings: envoy_config.GatewaySettings
    access_log: Path

    @property
    def port(self) -> int:
        return self.settings.gateway_port

    @property
    def url(self) -> str:
        return self.settings.url

    def access_entries(self) -> list[dict[str, Any]]:
        """The access log's entries so far: only whole lines (Envoy may be writing the last one while it is read)."""
        text = self.access_log.read_text()
        return [orjson.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]

    def admin_get(self, path: str, timeout_s: float = 5.0) -> httpx.Response:
        """GET on Envoy's admin interface (a unix socket)."""
        transport = httpx.HTTPTransport(uds=str(self.settings.admin_socket))
        with httpx.Client(transport=transport, timeout=timeout_s) as client:
            return client.get(f"http://envoy-admin{path}")

    def stop(self) -> None:
        self.proc.stop()


def start_envoy(workdir: Path, control_port: int, tokens: tuple[str, ...], **overrides: Any) -> Envoy:
    """Render the real template for free ports and start Envoy; returns once it listens."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings = envoy_config.GatewaySettings(
        tokens=tuple(Secret(t) for t in tokens),
        gateway_port=free_port(), admin_socket=workdir / "admin.sock", control_port=control_port,
        access_log_path=str(workdir / "access.log"), health_check_interval_s=0.5, concurrency=2,
        **overrides,
    )
    config = envoy_config.write(settings, workdir / "envoy.yaml")
    proc = spawn("envoy", envoy_config.envoy_command(config, settings), workdir / "envoy.log", os.environ)
    envoy = Envoy(proc, settings, Path(settings.access_log_path))

    def listening() -> bool:
        assert proc.alive(), f"envoy exited with {proc.popen.returncode}:\n{proc.log_tail()}"
        try:
            admin = envoy.admin_get("/ready", timeout_s=1)
            httpx.get(f"{envoy.url}/health", timeout=2, verify=False)
        except httpx.HTTPError:
            return False
        return admin.status_code == 200

    try:
        eventually_sync(listening, timeout_s=30, interval_s=0.05, message="envoy listening")
    except AssertionError:
        proc.stop()
        raise
    return envoy



@dataclass
class EdgeStack:
    """The shared stack: Envoy in front of control."""

    envoy: Envoy
    control: Proc
    control_port: int
    tokens: tuple[str, ...]
    db_url: str
    redis_url: str
    workdir: Path

    @property
    def url(self) -> str:
        return self.envoy.url

    def auth(self, index: int = 0) -> dict[str, str]:
        """Headers carrying the ``index``-th configured token."""
        return {"Authorization": f"Bearer {self.tokens[index]}"}

    def client(self, token_index: int | None = 0) -> httpx.Client:
        """An httpx client on the gateway, with a token unless ``token_index`` is None."""
        headers = self.auth(token_index) if token_index is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture(scope="package")
def edge_db(pg_server_url: str, pg_template: str) -> Iterator[str]:
    """A migrated database for the edge stack."""
    name = f"tt_edge_{os.getpid()}"
    with template_database(pg_server_url, pg_template, name) as url:
        yield url


@pytest.fixture(scope="package")
def edge(edge_db: str, redis_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeStack]:
    """Real Envoy in front of the real control service, shared by the edge tests."""
    import redis

    workdir = Path(tmp_path_factory.mktemp("edge"))
    tokens = (secrets.token_hex(32), secrets.token_hex(32))
    rurl = redis_db(redis_server_url, EDGE_REDIS_DB)
    client = redis.Redis.from_url(rurl)
    client.flushdb()
    client.close()
    control, port = start_control(workdir, edge_db, rurl, tokens)
    try:
        envoy = start_envoy(workdir / "envoy", port, tokens)
    except BaseException:
        control.stop()
        raise
    stack = EdgeStack(envoy, control, port, tokens, edge_db, rurl, workdir)
    try:
        with stack.client() as c:
            eventually_sync(lambda: c.get("/ready").status_code == 200, timeout_s=20,
                            message="/ready through envoy")
        yield stack
    finally:
        envoy.stop()
        control.stop()


def raw_request(port: int, method: str, path: str, headers: Mapping[str, str] | None = None,
                body: bytes | None = None,
                extra_headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP/1.1 request with ``path`` sent byte for byte (no client-side normalisation).

    Returns status, lower-cased headers and the JSON body (or the text when not JSON).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        all_headers = list((headers or {}).items()) + list(extra_headers or [])
        if body is not None:
            all_headers.append(("Content-Type", "application/json"))
            all_headers.append(("Content-Length", str(len(body))))
        for name, value in all_headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        data = reply.read()
        hdrs = {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()
    try:
        parsed: Any = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        parsed = data.decode(errors="replace")
    return reply.status, hdrs, parsed
