"""Channels between the services, with keepalive pings.

A consumer paused for longer than the server's TCP user timeout (20 s by default in gRPC core: a
SIGSTOP, a VM pause) has its connection dropped by the server. Measured here (grpcio 1.85, uvloop),
the consumer's server-streaming call then sometimes never ends: the connection is gone on both
sides, the channel still reports READY, and the consumer waits forever for the next message. With
keepalive pings the client finds out: a ping left unanswered for ``KEEPALIVE_TIMEOUT_S`` closes the
connection, the call fails with UNAVAILABLE, and the consumer reconnects from its cursor. gRPC core's
own ping timeout (a minute) is set to the keepalive timeout: with the default, the ping goes
unanswered for a minute first. Servers (``common.grpcserver``) accept the pings.

Every channel carries the internal token (``common.grpcauth``): each call gets its ``authorization``
metadata unless the caller passes its own (a tool calling control's public services with the control
token). The metadata is added where a call is made, once per call: a stream's messages cost nothing more,
and no client interceptor (an extra task per call, an extra generator per streamed message) is involved.
With TLS configured the channel is a mutual-TLS one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the largest message a service sends or accepts (gRPC's default receive limit)

if TYPE_CHECKING:
    from common.grpcauth import GrpcSecurity

Metadata = Sequence[tuple[str, str | bytes]]

KEEPALIVE_S = 5.0  # a ping after this long without a read
KEEPALIVE_TIMEOUT_S = 3.0  # the connection is dropped when the ping's answer takes longer

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),  # never answer frequent pings with GOAWAY
)


def client_options(keepalive_s: float = KEEPALIVE_S,
                   keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S) -> tuple[tuple[str, int], ...]:
    """Channel options: ping every ``keepalive_s`` of quiet, drop the connection after ``keepalive_timeout_s``."""
    return (
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    )


def with_credential(metadata: Metadata | None, credential: Metadata) -> Metadata:
    """``metadata`` plus ``credential``, unless it carries an ``authorization`` value already."""
    if metadata is None:
        return credential
    if any(key.lower() == "authorization" for key, _ in metadata):
        return metadata
    return (*metadata, *credential)


class _Authorized:
    """A multi-callable whose calls carry the credential (``metadata=`` of the caller is kept)."""

    __slots__ = ("_call", "_credential")

    def __init__(self, call: Any, credential: Metadata) -> None:
        self._call = call
        self._credential = credential

    def __call__(self, *args: Any, metadata: Metadata | None = None, **kwargs: Any) -> Any:
        return self._call(*args, metadata=with_credential(metadata, self._credential), **kwargs)

    def __getattr__(self, name: str) -> Any:  # with_call / future of blocking multi-callables
        attr = getattr(self._call, name)
        if not callable(attr):
            return attr
        credential = self._credential

        def call(*args: Any, metadata: Metadata | None = None, **kwargs: Any) -> Any:
            return attr(*args, metadata=with_credential(metadata, credential), **kwargs)

        return call


class AuthorizedChannel(grpc.aio.Channel):
    """A grpc.aio channel whose every call carries the internal token (see the module docstring)."""

    def __init__(self, inner: grpc.aio.Channel, credential: Metadata) -> None:
        self._inner = inner
        self._credential = credential

    async def __aenter__(self) -> AuthorizedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.unary_unary(*args, **kwargs), self._credential)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.unary_stream(*args, **kwargs), self._credential)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.stream_unary(*args, **kwargs), self._credential)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.stream_stream(*args, **kwargs), self._credential)


class AuthorizedBlockingChannel(grpc.Channel):
    """The blocking counterpart of :class:`AuthorizedChannel` (tools, tests)."""

    def __init__(self, inner: grpc.Channel, credential: Metadata) -> None:
        self._inner = inner
        self._credential = credential

    def __enter__(self) -> AuthorizedBlockingChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    def close(self) -> None:
        self._inner.close()

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._inner.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._inner.unsubscribe(callback)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.unary_unary(*args, **kwargs), self._credential)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.unary_stream(*args, **kwargs), self._credential)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.stream_unary(*args, **kwargs), self._credential)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Authorized(self._inner.stream_stream(*args, **kwargs), self._credential)


def channel(target: str, security: GrpcSecurity, *, keepalive_s: float = KEEPALIVE_S,
            keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S) -> grpc.aio.Channel:
    """A channel to an internal service carrying the internal token, with keepalive pings (TLS when set)."""
    options = client_options(keepalive_s, keepalive_timeout_s)
    if security.tls is None:
        inner = grpc.aio.insecure_channel(target, options=options)
    else:
        inner = grpc.aio.secure_channel(target, security.tls.channel_credentials(),
                                        options=(*options, *security.tls.channel_options()))
    return AuthorizedChannel(inner, security.metadata)


def blocking_channel(target: str, security: GrpcSecurity) -> grpc.Channel:
    """A blocking channel to an internal service carrying the internal token (tools and tests)."""
    if security.tls is None:
        inner = grpc.insecure_channel(target)
    else:
        inner = grpc.secure_channel(target, security.tls.channel_credentials(),
                                    options=security.tls.channel_options())
    return AuthorizedBlockingChannel(inner, security.metadata)
