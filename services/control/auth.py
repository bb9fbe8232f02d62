"""Bearer-token gate for the control gRPC port.

- Every call needs exactly one ``authorization: Bearer <token>`` metadata value whose token equals one
  of the configured tokens. Tokens are compared with ``hmac.compare_digest`` against *every*
  configured token (no early exit), so timing reveals neither which token nor how much matched.
- The scheme is matched case-insensitively (RFC 7235 §2.1: auth-scheme is case-insensitive;
  RFC 6750 §2.1 credentials = "Bearer" 1*SP b64token). The Envoy edge may be stricter; this port follows
  the RFCs. A bare token without scheme, an empty token, several ``authorization`` values or another
  scheme are rejected with UNAUTHENTICATED.
- Open without a token: grpc.health.v1.Health, server reflection (v1 and v1alpha) and ProbeService.
- The caller's token id (first 12 hex of sha256 of the token, never the token) is made available
  to the servicer through ``current_token_id()``.
"""

from __future__ import annotations

import contextvars
import hmac
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc

from services.control.audit import token_id

OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
    "tradingtools.control.v1.ProbeService",
})
CHALLENGE = ("www-authenticate", 'Bearer realm="tradingtools"')
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*) +([A-Za-z0-9._~+/-]+=*)$")

_token_id: contextvars.ContextVar[str] = contextvars.ContextVar("control_token_id", default="")


def current_token_id() -> str:
    """Token id of the call being served ("" for open methods)."""
    return _token_id.get()


def service_of(method: str) -> str:
    """``/pkg.Service/Method`` → ``pkg.Service``."""
    return method.lstrip("/").split("/", 1)[0]


class TokenCheck:
    """Decides whether metadata carries a valid bearer token (pure; testable without gRPC)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens)
        if not self._tokens:
            raise ValueError("at least one token is required")
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
    """A handler of the same kind as ``handler`` that fails with UNAUTHENTICATED."""
    details = f"unauthenticated: {message}"

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, details, (CHALLENGE,))

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, details, (CHALLENGE,))
        yield  # pragma: no cover - makes this an async generator

    kwargs: dict[str, Any] = {"request_deserializer": handler.request_deserializer,
                              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls to gated services without a valid token; tags authorized calls with the token id."""

    def __init__(self, check: TokenCheck, open_services: frozenset[str] = OPEN_SERVICES) -> None:
        self.check = check
        self.open_services = open_services

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or service_of(handler_call_details.method) in self.open_services:
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())
        tid, why = self.check.verify(metadata)
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

