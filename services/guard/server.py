"""Guard's gRPC server: ``GuardService.StreamTriggerEvents`` served from the durable log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from common.grpcauth import GrpcSecurity
from common.grpcserver import GrpcServer, start_server
from common.logserve import stream_log
from common.streams import DurableLog
from tradingtools.guard.v1 import guard_pb2 as gpb
from tradingtools.guard.v1 import guard_pb2_grpc as ggrpc

SERVICE_NAME = gpb.DESCRIPTOR.services_by_name["GuardService"].full_name


class GuardServicer(ggrpc.GuardServiceServicer):
    """Streams trigger events from a cursor (thin: the log does the work)."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamTriggerEvents(
            self, request: gpb.StreamTriggerEventsRequest,
            context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[gpb.StreamTriggerEventsResponse]:
        """Every event after ``after_cursor``, forever."""
        async for item in stream_log(context, self.log, request.after_cursor, request.consumer, trigger_event_entry):
            yield item


def trigger_event_entry(cursor: str, payload: bytes) -> gpb.StreamTriggerEventsResponse:
    """One entry of the trigger-event log as a stream response."""
    return gpb.StreamTriggerEventsResponse(cursor=cursor, event=gpb.TriggerEvent.FromString(payload))


async def start_grpc(host: str, port: int, log_: DurableLog, security: GrpcSecurity) -> GrpcServer:
    """Bind ``host:port`` (0 = any) and serve behind the internal token."""

    def register(server: grpc.aio.Server) -> Iterable[str]:
        ggrpc.add_GuardServiceServicer_to_server(GuardServicer(log_), server)
        return (SERVICE_NAME,)

    return await start_server(host, port, register, security=security)
