"""gRPC surface of the executor: SubmitOrder (idempotent), the OrderEvent stream and EndOrder (an operator's; thin:
proto ↔ domain)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import redis.exceptions

from common.logserve import stream_log, stream_log_batches
from common.streams import DurableLog
from services.executor.adapters.order_sql import ROUTER_COPY_ID
from services.executor.adapters.order_store import OrderStore
from services.executor.admission import OrderAdmission
from services.executor.domain.operator_statement import NotEndable, UnknownOrder, read_statement
from services.executor.operator_end import NotLeaseHolder, OperatorEnd
from services.executor.order_runner import OrderRunner
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

DEFAULT_EVENT_BATCH = 256  # events in one StreamOrderEventBatches response when the request does not say
MAX_EVENT_BATCH = 1024  # and at most (a response stays far below gRPC's 4 MB default receive limit)

ROUTER_COPY_FORM = re.compile(ROUTER_COPY_ID.removeprefix("^").removesuffix("$"))
log = logging.getLogger(__name__)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping of executor errors to gRPC status."""
    if isinstance(exc, psycopg.OperationalError | redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
                  | TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"storage unavailable: {type(exc).__name__}"
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:300]
    if isinstance(exc, UnknownOrder):
        return grpc.StatusCode.NOT_FOUND, str(exc)[:300]
    if isinstance(exc, NotEndable):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)[:300]
    if isinstance(exc, NotLeaseHolder):
        return grpc.StatusCode.UNAVAILABLE, str(exc)[:300]
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


class ExecutorServicer(egrpc.ExecutorServiceServicer):
    """SubmitOrder, the order and redemption event streams, EndOrder."""

    def __init__(self, admission: OrderAdmission, runner: OrderRunner, store: OrderStore, events_log: DurableLog, *,
                 submit_wait_s: float, redemptions_log: DurableLog | None = None) -> None:
        self.admission = admission
        self.runner = runner
        self.store = store
        self.events_log = events_log
        self.redemptions_log = redemptions_log
        self.submit_wait_s = submit_wait_s
        self.ender = OperatorEnd(runner, store)

    async def SubmitOrder(self, request: epb.SubmitOrderRequest, context: Any) -> epb.SubmitOrderResponse:
        """Place one order once; a known client order id returns its latest event with duplicate=true."""
        coid = request.order.client_order_id
        if not coid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "order.client_order_id is required")
        if request.order.origin != epb.ORDER_ORIGIN_TRIGGER and ROUTER_COPY_FORM.fullmatch(coid):
            # the router's copies' form (guard's exits share it, told by their origin): the router counts such an
            # order from its Redis reservations only, so a manual order of this form would escape its caps
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "order.client_order_id: co_ + 32 hex digits is the "
                                "form of the router's copies; give this order another")
        try:
            # shielded: a caller that goes away (guard killed mid-call) must not leave a persisted intent
            # without its runner
            duplicate, _ = await asyncio.shield(self.admission.submit(request.order))
            # the event its runner wrote last, as stored (no read back); else read from PostgreSQL
            last = None if duplicate else await self.runner.wait_first_event(coid, self.submit_wait_s)
            if last is None:
                last = await self.store.last_event(coid)
        except Exception as exc:
            code, message = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("SubmitOrder failed", extra={"client_order_id": coid})
            await context.abort(code, message)
        return epb.SubmitOrderResponse(client_order_id=coid, duplicate=duplicate,
                                       last_event=last if last is not None else epb.OrderEvent())

    async def EndOrder(self, request: epb.EndOrderRequest, context: Any) -> epb.EndOrderResponse:
        """End by hand an order that is not final, with the outcome an operator read at the venue."""
        coid = request.client_order_id
        try:
            known = request.outcome in epb.EndOutcome.values()
            outcome = epb.EndOutcome.Name(request.outcome).removeprefix("END_OUTCOME_") if known else ""
            statement = read_statement(outcome, request.filled_size, request.avg_price, request.reason)
            last = await self.ender.end(coid, statement)
        except Exception as exc:
            code, message = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("EndOrder failed", extra={"client_order_id": coid})
            await context.abort(code, message)
        return epb.EndOrderResponse(last_event=last)

    async def StreamOrderEvents(self, request: epb.StreamOrderEventsRequest,
                                context: Any) -> AsyncIterator[epb.StreamOrderEventsResponse]:
        """Order events from the durable log, resumable from a cursor."""
        async for item in stream_log(context, self.events_log, request.after_cursor, request.consumer,
                                     order_event_entry):
            yield item

    async def StreamOrderEventBatches(self, request: epb.StreamOrderEventBatchesRequest,
                                      context: Any) -> AsyncIterator[epb.StreamOrderEventBatchesResponse]:
        """Order events from the durable log in the batches they were ready in, resumable from a cursor."""
        async for item in stream_log_batches(context, self.events_log, request.after_cursor, request.consumer,
                                             order_event_entry, order_event_batch,
                                             min(request.max_events or DEFAULT_EVENT_BATCH, MAX_EVENT_BATCH)):
            yield item


    async def StreamRedemptionEvents(self, request: epb.StreamRedemptionEventsRequest,
                                     context: Any) -> AsyncIterator[epb.StreamRedemptionEventsResponse]:
        """Redemption events from the durable log, resumable from a cursor."""
        if self.redemptions_log is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "redemption events are not served here")
            return
        async for item in stream_log(context, self.redemptions_log, request.after_cursor, request.consumer,
                                     redemption_event_entry):
            yield item


def redemption_event_entry(cursor: str, payload: bytes) -> epb.StreamRedemptionEventsResponse:
    """One entry of the redemption-event log as a stream response (raises on a payload that does not parse)."""
    return epb.StreamRedemptionEventsResponse(cursor=cursor, event=epb.RedemptionEvent.FromString(payload))


def order_event_entry(cursor: str, payload: bytes) -> epb.StreamOrderEventsResponse:
    """One entry of the order-event log as a stream response (raises on a payload that does not parse)."""
    return epb.StreamOrderEventsResponse(cursor=cursor, event=epb.OrderEvent.FromString(payload))


def order_event_batch(entries: list[epb.StreamOrderEventsResponse]) -> epb.StreamOrderEventBatchesResponse:
    """Entries that were ready together as one batched stream response."""
    return epb.StreamOrderEventBatchesResponse(entries=entries)
