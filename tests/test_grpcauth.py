"""Internal authentication of the gRPC ports (``common.grpcauth``): the token on every call but health and
reflection, the bind rule, TLS, and the client side that sends the token."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.config import ConfigError, Secret, project_root
from common.grpcauth import GrpcSecurity, TlsFiles, TokenCheck, is_loopback
from common.grpcclient import blocking_channel, channel, with_credential
from common.grpcserver import GrpcServer, start_server
from services.control.config import Settings as ControlSettings
from services.executor.config import Settings as ExecutorSettings
from services.guard.config import Settings as GuardSettings
from services.ingest.config import IngestSettings
from services.router.config import Settings as RouterSettings
from tests.helpers import INTERNAL, INTERNAL_ENV, INTERNAL_TOKEN, rpc_code
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

CONTROL_TOKEN = "c0" * 32
OTHER_TOKEN = "0f" * 32
EXECUTOR = "tradingtools.execution.v1.ExecutorService"
STORAGE_ENV = {"DATABASE_URL": "postgresql://u@127.0.0.1/db", "REDIS_URL": "redis://127.0.0.1:6379/0"}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# -- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False),
    ("", False), ("127.0.0.1.example.com", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


TLS = TlsFiles("cert.pem", "key.pem", "ca.pem")


@pytest.mark.parametrize(("host", "tls", "allow", "refused"), [
    ("127.0.0.1", None, False, False),
    ("0.0.0.0", None, False, True),
    ("10.1.2.3", None, False, True),
    ("0.0.0.0", TLS, False, False),
    ("0.0.0.0", None, True, False),
])
def test_a_non_loopback_bind_needs_tls_or_the_explicit_opt_in(host: str, tls: TlsFiles | None, allow: bool,
                                                              refused: bool) -> None:
    security = replace(INTERNAL, tls=tls, allow_insecure_bind=allow)
    if refused:
        with pytest.raises(ConfigError, match=r"TT_X_HOST=.*TT_GRPC_ALLOW_INSECURE_BIND"):
            security.check_bind(host, "TT_X_HOST")
    else:
        security.check_bind(host, "TT_X_HOST")


@pytest.mark.parametrize(("metadata", "expected"), [
    (None, bearer(INTERNAL_TOKEN)),
    ((("x-request-id", "r1"),), (("x-request-id", "r1"), *bearer(INTERNAL_TOKEN))),
    (bearer(CONTROL_TOKEN), bearer(CONTROL_TOKEN)),  # a caller's own credential is kept, never doubled
    ((("Authorization", "Bearer x"),), (("Authorization", "Bearer x"),)),
])
def test_the_credential_is_added_unless_the_caller_brings_one(metadata: Any, expected: Any) -> None:
    assert tuple(with_credential(metadata, INTERNAL.metadata)) == expected


def test_tokens_come_from_the_environment_first_for_rotation() -> None:
    s = GrpcSecurity.from_env({"TT_INTERNAL_TOKEN": f"{INTERNAL_TOKEN}, {OTHER_TOKEN}"})
    assert [t.value for t in s.tokens] == [INTERNAL_TOKEN, OTHER_TOKEN]
    assert s.metadata == bearer(INTERNAL_TOKEN)  # the first one is sent, every one accepted
    assert s.check().verify(bearer(OTHER_TOKEN))[0] is not None
    assert INTERNAL_TOKEN not in repr(s) and OTHER_TOKEN not in repr(s)


def test_tokens_fall_back_to_the_file_make_up_writes(tmp_path: Path) -> None:
    (tmp_path / "internal_token").write_text(OTHER_TOKEN + "\n")
    assert [t.value for t in GrpcSecurity.from_env({"TT_RUN_DIR": str(tmp_path)}).tokens] == [OTHER_TOKEN]


@pytest.mark.parametrize(("env", "message"), [
    ({}, "TT_INTERNAL_TOKEN is unset"),
    ({"TT_INTERNAL_TOKEN": "short"}, "TT_INTERNAL_TOKEN entry 0 must be 64 hex"),
    ({"TT_INTERNAL_TOKEN": CONTROL_TOKEN, "CONTROL_API_TOKEN": f"{OTHER_TOKEN},{CONTROL_TOKEN}"},
     "must differ from every CONTROL_API_TOKEN"),
    ({**INTERNAL_ENV, "TT_GRPC_TLS_CERT_FILE": "/x"}, "without TT_GRPC_TLS_KEY_FILE, TT_GRPC_TLS_CA_FILE"),
    ({**INTERNAL_ENV, "TT_GRPC_TLS_CERT_FILE": "/nope/c", "TT_GRPC_TLS_KEY_FILE": "/nope/k",
      "TT_GRPC_TLS_CA_FILE": "/nope/ca"}, "TT_GRPC_TLS_CERT_FILE: /nope/c is not a readable file"),
    ({**INTERNAL_ENV, "TT_GRPC_ALLOW_INSECURE_BIND": "perhaps"}, "TT_GRPC_ALLOW_INSECURE_BIND must be a boolean"),
])
def test_bad_settings_are_refused_naming_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GrpcSecurity.from_env({"TT_RUN_DIR": str(tmp_path), **env})


@pytest.mark.parametrize("tokens", [[""], ["ab"], [INTERNAL_TOKEN, ""], [INTERNAL_TOKEN, "0f" * 16], ["g" * 64]])
def test_a_check_refuses_an_empty_or_short_token_however_it_is_built(tokens: list[str]) -> None:
    with pytest.raises(ValueError, match="64 hex"):
        TokenCheck(tokens)
    with pytest.raises(ConfigError, match="64 hex"):
        GrpcSecurity(tuple(Secret(t) for t in tokens))


def test_the_control_token_file_counts_too(tmp_path: Path) -> None:
    (tmp_path / "control_api_token").write_text(CONTROL_TOKEN)
    with pytest.raises(ConfigError, match="must differ"):
        GrpcSecurity.from_env({"TT_RUN_DIR": str(tmp_path), "TT_INTERNAL_TOKEN": CONTROL_TOKEN})


SERVICE_SETTINGS: list[tuple[Any, str, Mapping[str, str]]] = [
    (IngestSettings, "TT_INGEST_GRPC_HOST", {}),
    (RouterSettings, "TT_ROUTER_GRPC_HOST", STORAGE_ENV),
    (ExecutorSettings, "TT_EXECUTOR_HOST", {}),
    (GuardSettings, "TT_GUARD_HOST", STORAGE_ENV),
    (ControlSettings, "TT_CONTROL_HOST", {**STORAGE_ENV, "CONTROL_API_TOKEN": CONTROL_TOKEN}),
]


@pytest.mark.parametrize(("settings", "host_var", "base"), SERVICE_SETTINGS)
def test_every_service_reads_the_token_and_refuses_a_plain_text_network_bind(
        tmp_path: Path, settings: Any, host_var: str, base: Mapping[str, str]) -> None:
    env = {"TT_RUN_DIR": str(tmp_path), **base}
    with pytest.raises(ConfigError, match="TT_INTERNAL_TOKEN"):
        settings.from_env(env)
    assert settings.from_env({**env, **INTERNAL_ENV}).security.tokens == INTERNAL.tokens
    with pytest.raises(ConfigError, match=host_var):
        settings.from_env({**env, **INTERNAL_ENV, host_var: "0.0.0.0"})
    opted_in = settings.from_env({**env, **INTERNAL_ENV, host_var: "0.0.0.0", "TT_GRPC_ALLOW_INSECURE_BIND": "1"})
    assert opted_in.security.allow_insecure_bind


@pytest.mark.integration
def test_a_service_process_bound_to_the_network_in_plain_text_refuses_to_start(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TT_RUN_DIR": str(tmp_path), **INTERNAL_ENV, "TT_EXECUTOR_HOST": "0.0.0.0"}
    done = subprocess.run([sys.executable, "-m", "services.executor"], cwd=project_root(), env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "TT_EXECUTOR_HOST='0.0.0.0' is not a loopback address and TLS is off" in done.stdout + done.stderr


# -- on a real server ------------------------------------------------------------------------------------


class _Executor(egrpc.ExecutorServiceServicer):
    """SubmitOrder answers; StreamOrderEvents sends one event, then stays open."""

    async def SubmitOrder(self, request, context):  # type: ignore[no-untyped-def]
        return epb.SubmitOrderResponse(client_order_id=request.order.client_order_id)

    async def StreamOrderEvents(self, request, context):  # type: ignore[no-untyped-def]
        yield epb.StreamOrderEventsResponse(cursor="1", event=epb.OrderEvent(event_id="oev_1"))
        await asyncio.Event().wait()


async def _serve(security: GrpcSecurity = INTERNAL, host: str = "127.0.0.1") -> GrpcServer:
    return await start_server(host, 0, lambda s: (egrpc.add_ExecutorServiceServicer_to_server(_Executor(), s),
                                                  [EXECUTOR])[1], security=security)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = await _serve()
    yield srv
    await srv.stop(0)


def _calls(stub: egrpc.ExecutorServiceStub, metadata: Any) -> list[Any]:
    return [stub.SubmitOrder(epb.SubmitOrderRequest(order=epb.Order(client_order_id="co_1")), metadata=metadata),
            stub.StreamOrderEvents(epb.StreamOrderEventsRequest(after_cursor="0"), metadata=metadata)]


@pytest.mark.integration
@pytest.mark.parametrize(("metadata", "code"), [
    ((), grpc.StatusCode.UNAUTHENTICATED),
    (bearer(OTHER_TOKEN), grpc.StatusCode.UNAUTHENTICATED),
    (bearer(CONTROL_TOKEN), grpc.StatusCode.UNAUTHENTICATED),  # the backend's token opens nothing here
    ((("authorization", INTERNAL_TOKEN),), grpc.StatusCode.UNAUTHENTICATED),  # no scheme
    ((("authorization", f"Basic {INTERNAL_TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED),
    ((*bearer(INTERNAL_TOKEN), *bearer(INTERNAL_TOKEN)), grpc.StatusCode.UNAUTHENTICATED),
    (bearer(INTERNAL_TOKEN), grpc.StatusCode.OK),
    ((("authorization", f"bearer {INTERNAL_TOKEN}"),), grpc.StatusCode.OK),
])
async def test_unary_and_streaming_calls_need_the_internal_token(server: GrpcServer, metadata: Any,
                                                                 code: grpc.StatusCode) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        for call in _calls(egrpc.ExecutorServiceStub(ch), metadata):
            assert await rpc_code(call) == code


@pytest.mark.integration
async def test_a_refusal_says_why_with_a_challenge(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await egrpc.ExecutorServiceStub(ch).SubmitOrder(epb.SubmitOrderRequest())
    assert err.value.details().startswith("unauthenticated: missing authorization")
    assert ("www-authenticate", 'Bearer realm="tradingtools"') in tuple(err.value.trailing_metadata() or ())


@pytest.mark.integration
async def test_health_and_reflection_stay_open(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=EXECUTOR))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        listed = await call.read()
        call.cancel()
    assert EXECUTOR in {s.name for s in listed.list_services_response.service}


@pytest.mark.integration
async def test_the_services_channel_sends_the_token_on_every_call(server: GrpcServer) -> None:
    async with channel(f"127.0.0.1:{server.port}", INTERNAL) as ch:
        stub = egrpc.ExecutorServiceStub(ch)
        reply = await stub.SubmitOrder(epb.SubmitOrderRequest(order=epb.Order(client_order_id="co_1")))
        assert reply.client_order_id == "co_1"
        stream = stub.StreamOrderEvents(epb.StreamOrderEventsRequest(after_cursor="0"))
        assert (await stream.read()).event.event_id == "oev_1"
        stream.cancel()
        wrong = await rpc_code(stub.SubmitOrder(epb.SubmitOrderRequest(), metadata=bearer(CONTROL_TOKEN)))
        assert wrong == grpc.StatusCode.UNAUTHENTICATED  # the caller's own credential wins, and is checked

    def blocking_call() -> str:  # tools and tests use blocking channels
        with blocking_channel(f"127.0.0.1:{server.port}", INTERNAL) as sync:
            reply = egrpc.ExecutorServiceStub(sync).SubmitOrder(
                epb.SubmitOrderRequest(order=epb.Order(client_order_id="co_2")), timeout=5)
            return str(reply.client_order_id)

    assert await asyncio.to_thread(blocking_call) == "co_2"


async def test_a_non_loopback_plain_text_server_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match=r"'0\.0\.0\.0' is not a loopback address"):
        await _serve(host="0.0.0.0")


# -- TLS ----------------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, and a certificate it signs for 127.0.0.1 (server and client use): PEM files in a folder."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tt-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             cwd=tmp_path)
    _openssl("req", *ec, "-keyout", "svc.key", "-out", "svc.csr", "-subj", "/CN=tt-service", cwd=tmp_path)
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", "svc.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "svc.pem", "-days", "2", "-extfile", "ext", cwd=tmp_path)
    return tmp_path


@pytest.mark.integration
async def test_mutual_tls_serves_a_network_bind_and_refuses_plain_text_and_unknown_clients(pki: Path) -> None:
    tls = GrpcSecurity.from_env({**INTERNAL_ENV, "TT_GRPC_TLS_CERT_FILE": str(pki / "svc.pem"),
                                 "TT_GRPC_TLS_KEY_FILE": str(pki / "svc.key"),
                                 "TT_GRPC_TLS_CA_FILE": str(pki / "ca.pem")})
    tls.check_bind("0.0.0.0")  # TLS lifts the loopback rule
    srv = await _serve(tls)
    try:
        async with channel(f"127.0.0.1:{srv.port}", tls) as ch:
            reply = await egrpc.ExecutorServiceStub(ch).SubmitOrder(
                epb.SubmitOrderRequest(order=epb.Order(client_order_id="co_tls")), timeout=10)
            assert reply.client_order_id == "co_tls"
            refused = egrpc.ExecutorServiceStub(ch).SubmitOrder(epb.SubmitOrderRequest(), metadata=bearer(OTHER_TOKEN))
            assert await rpc_code(refused) == grpc.StatusCode.UNAUTHENTICATED  # TLS does not replace the token
        async with channel(f"127.0.0.1:{srv.port}", INTERNAL) as plain:  # right token, no TLS
            assert await rpc_code(egrpc.ExecutorServiceStub(plain).SubmitOrder(
                epb.SubmitOrderRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        no_client_cert = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", no_client_cert) as anonymous:
            assert await rpc_code(egrpc.ExecutorServiceStub(anonymous).SubmitOrder(
                epb.SubmitOrderRequest(), metadata=INTERNAL.metadata, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    finally:
        await srv.stop(0)
