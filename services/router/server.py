"""gRPC: RouterService.StreamRoutedTrades serves the routed-trade durable log from a cursor."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import redis.exceptions

from common.grpcauth import GrpcSecurity
from common.grpcserver import GrpcServer, start_server
from common.streams import START_NEW, START_OLDEST, DurableLog, serve_log
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

SERVICE_NAME = epb.DESCRIPTOR.services_by_name["RouterService"].full_name
_CURSOR = re.compile(r"^\d+(-\d+)?$")


class InvalidCursor(ValueError):
    """A cursor that is not a durable-log position."""


def check_cursor(cursor: str) -> str:
    """"" (new only), "0" (oldest kept) or a log position like "1700000000000-0"."""
    if cursor in (START_NEW, START_OLDEST) or _CURSOR.match(cursor):
        return cursor
    raise InvalidCursor(f"after_cursor must be '', '0' or a log position like '1700000000000-0', got {cursor[:40]!r}")


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping of router errors to gRPC status."""
    if isinstance(exc, InvalidCursor):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, redis.exceptions.ResponseError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"log rejected the cursor: {exc}"
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
        return grpc.StatusCode.UNAVAILABLE, "routed-trade log unavailable"
    return grpc.StatusCode.INTERNAL, "internal error"


class RouterServicer(egrpc.RouterServiceServicer):
    """Thin servicer over the routed-trade log."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamRoutedTrades(
            self, request: epb.StreamRoutedTradesRequest,
            context: grpc.aio.ServicerContext) -> AsyncIterator[epb.StreamRoutedTradesResponse]:
        """Every RoutedTrade strictly after ``after_cursor``, forever."""
        def build(cursor: str, payload: bytes) -> epb.StreamRoutedTradesResponse:
            return epb.StreamRoutedTradesResponse(cursor=cursor, routed=epb.RoutedTrade.FromString(payload))

        try:
            async for item in serve_log(self.log, check_cursor(request.after_cursor), build):
                yield item
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            code, message = to_status(exc)
            await context.abort(code, message)


async def start(port: int, log_: DurableLog, *, security: GrpcSecurity, host: str = "127.0.0.1") -> GrpcServer:
    """Start the router's gRPC server behind the internal token (health and reflection included)."""
    def register(server: grpc.aio.Server) -> list[str]:
        egrpc.add_RouterServiceServicer_to_server(RouterServicer(log_), server)
        return [SERVICE_NAME]

    return await start_server(host, port, register, security=security)
