"""Channels between the services, with keepalive pings.

A consumer paused for longer than the server's TCP user timeout (20 s by default in gRPC core: a
SIGSTOP, a VM pause) has its connection dropped by the server. Measured here (grpcio 1.85, uvloop),
the consumer's server-streaming call then sometimes never ends: the connection is gone on both
sides, the channel still reports READY, and the consumer waits forever for the next message. With
keepalive pings the client finds out: a ping left unanswered for ``KEEPALIVE_TIMEOUT_S`` closes the
connection, the call fails with UNAVAILABLE, and the consumer reconnects from its cursor. gRPC core's
own ping timeout (a minute) is set to the keepalive timeout: with the default, the ping goes
unanswered for a minute first. Servers (``common.grpcserver``) accept the pings.
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the largest message a service sends or accepts (gRPC's default receive limit)
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


def channel(target: str, *, keepalive_s: float = KEEPALIVE_S,
            keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S) -> grpc.aio.Channel:
    """An insecure channel to an internal service, with keepalive pings."""
    return grpc.aio.insecure_channel(target, options=client_options(keepalive_s, keepalive_timeout_s))
