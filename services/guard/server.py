"""Guard's gRPC server: ``GuardService.StreamTriggerEvents`` served from the durable log."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from common.grpcauth import GrpcSecurity
from common.grpcserver import GrpcServer, start_server
from common.streams import DurableLog, serve_log
from tradingtools.guard.v1 import guard_pb2 as gpb
from tradingtools.guard.v1 import guard_pb2_grpc as ggrpc

SERVICE_NAME = gpb.DESCRIPTOR.services_by_name["GuardService"].full_name
_CURSOR = re.compile(r"^(|0|\d{1,20}-\d{1,20})$")


class BadRequest(ValueError):
    """A request field the service cannot use."""


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The one mapping of guard's errors to gRPC status."""
    if isinstance(exc, BadRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"


def _response(cursor: str, payload: bytes) -> gpb.StreamTriggerEventsResponse:
    return gpb.StreamTriggerEventsResponse(cursor=cursor, event=gpb.TriggerEvent.FromString(payload))


class GuardServicer(ggrpc.GuardServiceServicer):
    """Streams trigger events from a cursor (thin: the log does the work)."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamTriggerEvents(
            self, request: gpb.StreamTriggerEventsRequest,
            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[gpb.StreamTriggerEventsResponse]:
        """Every event after ``after_cursor``, forever."""
        try:
            if not _CURSOR.match(request.after_cursor):
                raise BadRequest(f"after_cursor: not a stream cursor: {request.after_cursor[:40]!r}")
        except BadRequest as exc:
            code, message = status_of(exc)
            await context.abort(code, message)
        async for item in serve_log(self.log, request.after_cursor, _response):
            yield item


async def start_grpc(host: str, port: int, log_: DurableLog, security: GrpcSecurity) -> GrpcServer:
    """Bind ``host:port`` (0 = any) and serve behind the internal token."""

    def register(server: grpc.aio.Server) -> Iterable[str]:
        ggrpc.add_GuardServiceServicer_to_server(GuardServicer(log_), server)
        return (SERVICE_NAME,)

    return await start_server(host, port, register, security=security)
