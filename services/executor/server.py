"""Starts the executor's gRPC server (health and reflection included)."""

from __future__ import annotations

from common.grpcauth import GrpcSecurity
from common.grpcserver import GrpcServer, start_server
from services.executor.servicer import ExecutorServicer
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

SERVICE_NAME = "tradingtools.execution.v1.ExecutorService"


async def start(servicer: ExecutorServicer, port: int, host: str, security: GrpcSecurity) -> GrpcServer:
    """Serve ``servicer`` on ``host:port`` (0 picks a free port), behind the internal token."""
    def register(server: object) -> list[str]:
        egrpc.add_ExecutorServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return await start_server(host, port, register, security=security)
