"""Starts the ingest gRPC server (health + reflection via common.grpcserver)."""

from __future__ import annotations

import grpc

from common.grpcauth import GrpcSecurity
from common.grpcserver import GrpcServer, start_server
from services.ingest.servicer import SERVICE_NAME, IngestServicer
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


async def start(servicer: IngestServicer, port: int, host: str, security: GrpcSecurity) -> GrpcServer:
    """Serve IngestService on ``host:port`` (port 0 picks a free one), behind the internal token."""
    def register(server: grpc.aio.Server) -> list[str]:
        mgrpc.add_IngestServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return await start_server(host, port, register, security=security)
