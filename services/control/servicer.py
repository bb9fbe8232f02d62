"""gRPC servicers: proto in → use case → proto out. All error mapping goes through ``errors.status_for``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.api import httpbody_pb2

from common.ids import new_id
from services.control.audit import Caller
from services.control.auth import current_token_id
from services.control.content_coding import accepts_gzip
from services.control.errors import ControlError, Unavailable, short_reason, status_for
from services.control.internal import InternalUseCases
from services.control.readiness import Readiness, SharedResult, is_ready, summary
from services.control.subscriptions import SubscriptionUseCases
from services.control.triggers import TriggerUseCases
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

log = logging.getLogger(__name__)
T = TypeVar("T")
Context = grpc.aio.ServicerContext
JSON = "application/json"


def caller_of(context: Context, method: str) -> Caller:
    """Who calls, what, under which request id and idempotency key."""
    request_id: str | bytes | None = None
    key: str | bytes | None = None
    for name, value in context.invocation_metadata() or ():  # one pass; the first value of each counts
        if name == "x-request-id" and request_id is None:
            request_id = value
        elif name == "idempotency-key" and key is None:
            key = value
    rid = _text(request_id or "").strip()[:128] or new_id("req")
    return Caller(token_id=current_token_id(), method=method, request_id=rid,
                  idempotency_key=None if key is None else _text(key))


def _metadata_value(context: Context, name: str) -> str:
    """Every value of the request metadata ``name``, joined with "," as HTTP joins repeated headers."""
    return ",".join(_text(v) for k, v in context.invocation_metadata() or () if k == name)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


async def serve(context: Context, method: str, work: Callable[[Caller], Awaitable[T]]) -> T:
    """Run one call; any exception becomes the status chosen by ``status_for``."""
    caller = caller_of(context, method)
    try:
        return await work(caller)
    except Exception as exc:  # the one place errors become statuses
        code, message = status_for(exc)
        extra = {"method": method, "request_id": caller.request_id, "code": code.name}
        if code == grpc.StatusCode.INTERNAL:
            log.exception("call failed", extra=extra)
            message = f"{message} (request {caller.request_id})"
        elif code == grpc.StatusCode.UNAVAILABLE:
            log.warning("call unavailable: %s", message, extra={**extra, "error": short_reason(exc, 300)})
        elif not isinstance(exc, ControlError):  # PostgreSQL refused a value of the request
            log.warning("call refused by the database: %s", message, extra={**extra, "error": short_reason(exc, 300)})
        await context.abort(code, message)
        raise  # unreachable: abort raises


class SubscriptionServicer(pb_grpc.SubscriptionServiceServicer):
    """REST /subscriptions…"""

    def __init__(self, subs: SubscriptionUseCases) -> None:
        self.subs = subs

    async def CreateSubscription(self, request: pb.CreateSubscriptionRequest, context: Context) -> spb.Subscription:
        return await serve(context, "CreateSubscription", lambda c: self.subs.create(request.subscription, c))

    async def GetSubscription(self, request: pb.GetSubscriptionRequest, context: Context) -> spb.Subscription:
        return await serve(context, "GetSubscription", lambda c: self.subs.get(request.id))

    async def ListSubscriptions(self, request: pb.ListSubscriptionsRequest,
                                context: Context) -> pb.ListSubscriptionsResponse:
        return await serve(context, "ListSubscriptions", lambda c: self.subs.list_page(
            follower_proxy=request.follower_proxy, leader_proxy=request.leader_proxy, state=request.state,
            page_size=request.page_size, page_token=request.page_token))

    async def ListSubscriptionsJson(self, request: pb.ListSubscriptionsRequest,
                                    context: Context) -> httpbody_pb2.HttpBody:
        async def work(_: Caller) -> httpbody_pb2.HttpBody:
            body = await self.subs.list_page_json(
                follower_proxy=request.follower_proxy, leader_proxy=request.leader_proxy, state=request.state,
                page_size=request.page_size, page_token=request.page_token,
                gzip_ok=accepts_gzip(_metadata_value(context, "accept-encoding")))
            if body.encoding:  # Envoy turns these into the response's headers
                await context.send_initial_metadata((("content-encoding", body.encoding), ("vary", "accept-encoding")))
            return httpbody_pb2.HttpBody(content_type=JSON, data=body.data)

        return await serve(context, "ListSubscriptionsJson", work)

    async def ListSubscriptionFills(self, request: pb.ListSubscriptionFillsRequest,
                                    context: Context) -> pb.ListSubscriptionFillsResponse:
        return await serve(context, "ListSubscriptionFills", lambda c: self.subs.fills_page(
            request.id, page_size=request.page_size, page_token=request.page_token))

    async def UpdateSubscription(self, request: pb.UpdateSubscriptionRequest, context: Context) -> spb.Subscription:
        return await serve(context, "UpdateSubscription",
                           lambda c: self.subs.update(request.id, request.subscription, request.update_mask, c))

    async def PauseSubscription(self, request: pb.PauseSubscriptionRequest, context: Context) -> spb.Subscription:
        return await serve(context, "PauseSubscription", lambda c: self.subs.pause(request.id, request.reason, c))

    async def ResumeSubscription(self, request: pb.ResumeSubscriptionRequest, context: Context) -> spb.Subscription:
        return await serve(context, "ResumeSubscription", lambda c: self.subs.resume(request.id, c))

    async def DeleteSubscription(self, request: pb.DeleteSubscriptionRequest,
                                 context: Context) -> pb.DeleteSubscriptionResponse:
        async def work(c: Caller) -> pb.DeleteSubscriptionResponse:
            await self.subs.stop(request.id, c)
            return pb.DeleteSubscriptionResponse()

        return await serve(context, "DeleteSubscription", work)


class TriggerServicer(pb_grpc.TriggerServiceServicer):
    """REST /triggers…"""

    def __init__(self, triggers: TriggerUseCases) -> None:
        self.triggers = triggers

    async def CreateTrigger(self, request: pb.CreateTriggerRequest, context: Context) -> tpb.Trigger:
        return await serve(context, "CreateTrigger", lambda c: self.triggers.create(request.trigger, c))

    async def UpdateTrigger(self, request: pb.UpdateTriggerRequest, context: Context) -> tpb.Trigger:
        return await serve(context, "UpdateTrigger",
                           lambda c: self.triggers.update(request.id, request.trigger, c))

    async def DeleteTrigger(self, request: pb.DeleteTriggerRequest, context: Context) -> pb.DeleteTriggerResponse:
        async def work(c: Caller) -> pb.DeleteTriggerResponse:
            await self.triggers.cancel(request.id, c)
            return pb.DeleteTriggerResponse()

        return await serve(context, "DeleteTrigger", work)

    async def GetTrigger(self, request: pb.GetTriggerRequest, context: Context) -> tpb.Trigger:
        return await serve(context, "GetTrigger", lambda c: self.triggers.get(request.id))

    async def ListTriggers(self, request: pb.ListTriggersRequest, context: Context) -> pb.ListTriggersResponse:
        return await serve(context, "ListTriggers", lambda c: self.triggers.list_page(
            wallet=request.wallet, state=request.state, page_size=request.page_size, page_token=request.page_token))


class ProbeServicer(pb_grpc.ProbeServiceServicer):
    """GET /health and /ready (open without a token)."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self.current = SharedResult(readiness.check)

    async def GetHealth(self, request: pb.GetHealthRequest, context: Context) -> pb.GetHealthResponse:
        return pb.GetHealthResponse(status="SERVING")

    async def GetReady(self, request: pb.GetReadyRequest, context: Context) -> pb.GetReadyResponse:
        async def work(_: Caller) -> pb.GetReadyResponse:
            checks = await self.current.get()
            if not is_ready(checks):
                raise Unavailable(summary(checks))
            return pb.GetReadyResponse(status="READY", checks=checks)

        return await serve(context, "GetReady", work)


class InternalServicer(pb_grpc.InternalControlServiceServicer):
    """Funding and perf actions (gRPC only; Envoy answers 404 for their REST spellings)."""

    def __init__(self, internal: InternalUseCases) -> None:
        self.internal = internal

    async def RecordFunding(self, request: pb.RecordFundingRequest, context: Context) -> pb.RecordFundingResponse:
        return await serve(context, "RecordFunding", lambda c: self.internal.record_funding(request, c))

    async def GetFunding(self, request: pb.GetFundingRequest, context: Context) -> pb.GetFundingResponse:
        return await serve(context, "GetFunding", lambda c: self.internal.get_funding(request.follower_wallet_id))

    async def ApplyPerfAction(self, request: pb.ApplyPerfActionRequest,
                              context: Context) -> pb.ApplyPerfActionResponse:
        return await serve(context, "ApplyPerfAction", lambda c: self.internal.apply_perf_action(request, c))
