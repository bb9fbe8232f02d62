"""Authentication of the gRPC ports: the internal token, the bind rule and optional TLS.

- Every call to a service needs ``authorization: Bearer <token>`` metadata whose token is one of the
  *internal* tokens (``TT_INTERNAL_TOKEN``, comma-separated for rotation, or ``.run/internal_token``
  written by ``make up``). It is not the backend's ``CONTROL_API_TOKEN``: that one opens only control's
  public services, and an internal token equal to a control token is refused at start-up. A missing,
  malformed or wrong credential is UNAUTHENTICATED. Health and reflection stay open (grpcurl, probes).
- Tokens are compared with ``hmac.compare_digest`` against *every* configured token (no early exit),
  so timing reveals neither which token nor how much matched. The scheme is matched case-insensitively
  (RFC 7235 §2.1); a bare token, an empty one, several ``authorization`` values or another scheme are
  refused.
- The check runs once per call: a stream is authenticated when it opens, never per message. A refused
  call's request is neither read nor decoded: whatever its size or bytes, the answer is UNAUTHENTICATED.
- Every token, however given (environment, file, or built in code), is 64 hex characters.
- A port binds a loopback address unless configured; a non-loopback bind without TLS refuses to start
  unless ``TT_GRPC_ALLOW_INSECURE_BIND`` is true (the token then crosses the network in clear text).
- TLS (optional, mutual): ``TT_GRPC_TLS_CERT_FILE`` / ``TT_GRPC_TLS_KEY_FILE`` (this process's certificate,
  served on its port and shown to the services it calls) and ``TT_GRPC_TLS_CA_FILE`` (the CA both ends
  check the other's certificate against). ``TT_GRPC_TLS_SERVER_NAME`` names the servers' certificates
  when the targets are addresses the certificates do not carry.

``common.grpcserver.start_server`` installs the check and the bind rule; ``common.grpcclient.channel``
sends the token; each service passes them the :class:`GrpcSecurity` read once by its settings.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from common.config import ConfigError, Secret, env_bool, env_str, load_tokens

INTERNAL_TOKEN_VAR = "TT_INTERNAL_TOKEN"
INTERNAL_TOKEN_FILE = "internal_token"
ALLOW_INSECURE_BIND_VAR = "TT_GRPC_ALLOW_INSECURE_BIND"
TLS_VARS = ("TT_GRPC_TLS_CERT_FILE", "TT_GRPC_TLS_KEY_FILE", "TT_GRPC_TLS_CA_FILE")

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = frozenset({"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"})
OPEN_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})
CHALLENGE = ("www-authenticate", 'Bearer realm="tradingtools"')
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*) +([A-Za-z0-9._~+/-]+=*)$")
_TOKEN = re.compile(r"[0-9A-Fa-f]{64}")

_token_id: contextvars.ContextVar[str] = contextvars.ContextVar("grpc_token_id", default="")


def token_id(token: str) -> str:
    """The audit identity of a bearer token: first 12 hex of its sha256 (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def current_token_id() -> str:
    """Token id of the unary call being served ("" for open methods and streams)."""
    return _token_id.get()


def invalid_tokens(tokens: Iterable[str]) -> list[int]:
    """Positions of the tokens that are not 64 hex characters (an empty or short one is guessable)."""
    return [i for i, token in enumerate(tokens) if _TOKEN.fullmatch(token) is None]


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` → ``pkg.Service``."""
    return method.lstrip("/").split("/", 1)[0]


class TokenCheck:
    """Decides whether metadata carries a valid bearer token (pure; testable without gRPC)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)
        if not self._tokens:
            raise ValueError("at least one token is required")
        if bad := invalid_tokens(t.decode() for t in self._tokens):
            raise ValueError(f"token entries {bad} must be 64 hex characters")
        self._ids = tuple(token_id(t.decode()) for t in self._tokens)

    def verify(self, metadata: Sequence[tuple[str, str | bytes]]) -> tuple[str | None, str]:
        """(token id, "") when authorized, else (None, why)."""
        values = [val for key, val in metadata if key.lower() == "authorization"]
        if not values:
            return None, "missing authorization metadata (Bearer token)"
        if len(values) > 1:
            return None, "several authorization values"
        raw = values[0]
        header = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        match = _CREDENTIALS.match(header.strip())
        if match is None:
            return None, "malformed authorization (expected: Bearer <token>)"
        if match.group(1).lower() != "bearer":
            return None, "unsupported authorization scheme (expected Bearer)"
        candidate = match.group(2).encode()
        matched = [hmac.compare_digest(token, candidate) for token in self._tokens]  # every token, no early exit
        if not any(matched):
            return None, "invalid token"
        return self._ids[matched.index(True)], ""


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler that fails with UNAUTHENTICATED before reading the request.

    Request-streaming whatever the method's kind and without a deserializer: gRPC reads and decodes a
    unary request before its handler runs, and a refused caller's bytes (4 MiB, or undecodable) must cost
    nothing and answer UNAUTHENTICATED, never the parser's error.
    """
    details = f"unauthenticated: {message}"

    async def deny(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, details, (CHALLENGE,))

    async def deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, details, (CHALLENGE,))
        yield  # pragma: no cover - makes this an async generator

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    return grpc.stream_unary_rpc_method_handler(deny)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid token; tags authorized unary calls with the token id.

    A service named in ``checks`` is gated by that check (``None``: open); every other service by
    ``internal``; health and reflection are always open.
    """

    def __init__(self, internal: TokenCheck, checks: Mapping[str, TokenCheck | None] | None = None) -> None:
        self.internal = internal
        self.checks: dict[str, TokenCheck | None] = {name: None for name in OPEN_SERVICES}
        self.checks.update(checks or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        check = self.checks.get(service_of(handler_call_details.method), self.internal)
        if check is None:
            return handler
        tid, why = check.verify(tuple(handler_call_details.invocation_metadata or ()))
        if tid is None:
            return _denied(handler, why)
        if handler.unary_unary is None:
            return handler
        inner: Callable[..., Any] = handler.unary_unary

        async def tagged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _token_id.set(tid)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            tagged, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``); a name is not resolved."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of mutual TLS: this process's certificate and key, and the CA that signs its peers'."""

    cert_file: str
    key_file: str
    ca_file: str
    server_name: str = ""

    def _read(self) -> tuple[bytes, bytes, bytes]:
        return (Path(self.cert_file).read_bytes(), Path(self.key_file).read_bytes(),
                Path(self.ca_file).read_bytes())

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve with the certificate; require a client certificate signed by the CA."""
        cert, key, ca = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Check the server against the CA; show the certificate."""
        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> tuple[tuple[str, str], ...]:
        """The name expected in servers' certificates, when set."""
        return (("grpc.ssl_target_name_override", self.server_name),) if self.server_name else ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsFiles | None:
        """All of ``TLS_VARS`` (readable files) or none; ConfigError naming what is missing."""
        values = {name: env_str(env, name) for name in TLS_VARS}
        given = [name for name, value in values.items() if value]
        if not given:
            return None
        missing = [name for name in TLS_VARS if name not in given]
        if missing:
            raise ConfigError(f"{', '.join(given)} set without {', '.join(missing)}: TLS needs all three")
        for name, path in values.items():
            if not os.access(path, os.R_OK) or not Path(path).is_file():
                raise ConfigError(f"{name}: {path} is not a readable file")
        cert, key, ca = (values[name] for name in TLS_VARS)
        return cls(cert, key, ca, env_str(env, "TT_GRPC_TLS_SERVER_NAME"))


@dataclass(frozen=True, slots=True, repr=False)
class GrpcSecurity:
    """How this process's gRPC ports and channels authenticate (see the module docstring)."""

    tokens: tuple[Secret, ...]
    tls: TlsFiles | None = None
    allow_insecure_bind: bool = False

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ConfigError(f"no internal token ({INTERNAL_TOKEN_VAR}; make up generates one)")
        if bad := invalid_tokens(t.value for t in self.tokens):
            raise ConfigError(f"{INTERNAL_TOKEN_VAR} entries {bad} must be 64 hex characters")

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The credential sent on every call (the first token: a rotation adds the new one second, then
        moves it first once every service accepts it)."""
        return (("authorization", f"Bearer {self.tokens[0].value}"),)

    def check(self) -> TokenCheck:
        """The check of incoming calls (every token is accepted)."""
        return TokenCheck(t.value for t in self.tokens)

    def check_bind(self, host: str, variable: str = "host") -> None:
        """ConfigError when ``host`` is not loopback, TLS is off and plain text is not explicitly allowed."""
        if is_loopback(host) or self.tls is not None or self.allow_insecure_bind:
            return
        raise ConfigError(
            f"{variable}={host!r} is not a loopback address and TLS is off: the internal token and every "
            f"order would cross the network in clear text. Bind 127.0.0.1, set {', '.join(TLS_VARS)}, or set "
            f"{ALLOW_INSECURE_BIND_VAR}=1 to accept plain text")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GrpcSecurity:
        """Read the internal tokens, TLS files and the plain-text opt-in; ConfigError naming the variable."""
        env = os.environ if env is None else env
        tokens = load_tokens(env, variable=INTERNAL_TOKEN_VAR, file=INTERNAL_TOKEN_FILE)
        try:
            control = {t.value for t in load_tokens(env)}
        except ConfigError:  # services other than control need no control token
            control = set()
        if any(t.value in control for t in tokens):
            raise ConfigError(f"{INTERNAL_TOKEN_VAR} must differ from every CONTROL_API_TOKEN: the backend's "
                              "token must not open the internal services")
        return cls(tokens, TlsFiles.from_env(env), env_bool(env, ALLOW_INSECURE_BIND_VAR, False))

    def __repr__(self) -> str:
        tls = "off" if self.tls is None else f"cert={self.tls.cert_file!r}"
        return (f"GrpcSecurity(tokens={len(self.tokens)} x Secret('***'), tls={tls}, "
                f"allow_insecure_bind={self.allow_insecure_bind})")
