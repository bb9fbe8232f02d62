"""``python -m tools.deploy.health PORT``: exit 0 when the gRPC server on 127.0.0.1:PORT answers SERVING.

The health check of a service's container where the platform has no gRPC probe of its own (compose).
Health needs no token; with ``TT_GRPC_TLS_*`` set the check speaks mutual TLS like the services.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.grpcauth import TlsFiles


def serving(port: int, env: Mapping[str, str], timeout_s: float = 2.0) -> bool:
    """Whether 127.0.0.1:``port`` answers its health check SERVING within ``timeout_s``."""
    tls = TlsFiles.from_env(env)
    target = f"127.0.0.1:{port}"
    channel = (grpc.insecure_channel(target) if tls is None
               else grpc.secure_channel(target, tls.channel_credentials(), tls.channel_options()))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: 0 when SERVING, 1 otherwise, 2 on a bad argument."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m tools.deploy.health PORT", file=sys.stderr)
        return 2
    return 0 if serving(int(args[0]), os.environ) else 1


if __name__ == "__main__":
    sys.exit(main())
