"""The executor over gRPC: ``SubmitOrder`` for trigger SELLs (the ``Executor`` port) and the order-event stream
guard's order consumer follows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from services.guard.ports import SubmitRejected
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

# Codes after which the same request would fail the same way. UNAUTHENTICATED is not one: a refused internal
# token is a deployment fault (a rotation done in the wrong order), fixed without touching the request, and a
# stop-loss must not be given up for it; the call is retried like an outage.
PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                       grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                       grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED,
                       grpc.StatusCode.ALREADY_EXISTS})


class GrpcExecutor:
    """``ExecutorService.SubmitOrder`` with a deadline."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.stub = egrpc.ExecutorServiceStub(channel)
        self.timeout_s = timeout_s

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        """Place the order; permanent refusals raise SubmitRejected."""
        try:
            return await self.stub.SubmitOrder(epb.SubmitOrderRequest(order=order), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in PERMANENT:
                raise SubmitRejected(exc.code().name, exc.details() or "") from exc
            raise


def order_event_stream(channel: grpc.aio.Channel,
                       consumer: str) -> Callable[[str], AsyncIterator[tuple[str, epb.OrderEvent]]]:
    """``ExecutorService.StreamOrderEventBatches`` as an ``open_stream(after_cursor)`` of single events (a
    gRPC message per batch costs a fraction of one per event: the consumer re-batches them anyway). An
    executor without that RPC (older than this guard, during a rolling upgrade) is read event by event
    through ``StreamOrderEvents`` instead."""
    stub = egrpc.ExecutorServiceStub(channel)
    batched = True

    async def open_stream(after: str) -> AsyncIterator[tuple[str, epb.OrderEvent]]:
        nonlocal batched
        if batched:
            request = epb.StreamOrderEventBatchesRequest(after_cursor=after, consumer=consumer)
            try:
                async for resp in stub.StreamOrderEventBatches(request):
                    for entry in resp.entries:
                        yield entry.cursor, entry.event
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    raise
                batched = False
            else:
                return
        async for one in stub.StreamOrderEvents(epb.StreamOrderEventsRequest(after_cursor=after, consumer=consumer)):
            yield one.cursor, one.event

    return open_stream
