"""gRPC: RouterService.StreamRoutedTrades serves the routed-trade durable log from a cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from common.grpcauth import GrpcSecurity
from common.grpcserver import GrpcServer, start_server
from common.logserve import stream_log
from common.streams import DurableLog
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

SERVICE_NAME = epb.DESCRIPTOR.services_by_name["RouterService"].full_name

class RouterServicer(egrpc.RouterServiceServicer):
    """Thin servicer over the routed-trade log."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamRoutedTrades(
            self, request: epb.StreamRoutedTradesRequest,
            context: grpc.aio.ServicerContext) -> AsyncIterator[epb.StreamRoutedTradesResponse]:
        """Every RoutedTrade strictly after ``after_cursor``, forever."""
        async for item in stream_log(context, self.log, request.after_cursor, request.consumer, routed_entry):
            yield item


def routed_entry(cursor: str, payload: bytes) -> epb.StreamRoutedTradesResponse:
    """One entry of the routed-trade log as a stream response."""
    return epb.StreamRoutedTradesResponse(cursor=cursor, routed=epb.RoutedTrade.FromString(payload))


async def start(port: int, log_: DurableLog, *, security: GrpcSecurity, host: str = "127.0.0.1") -> GrpcServer:
    """Start the router's gRPC server behind the internal token (health and reflection included)."""
    def register(server: grpc.aio.Server) -> list[str]:
        egrpc.add_RouterServiceServicer_to_server(RouterServicer(log_), server)
        return [SERVICE_NAME]

    return await start_server(host, port, register, security=security)
