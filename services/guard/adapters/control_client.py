"""Control over gRPC: ``InternalControlService.ApplyPerfAction`` (the ``Control`` port)."""

from __future__ import annotations

from decimal import Decimal

import grpc

from common.decimals import fmt
from services.guard.adapters.order_client import PERMANENT
from services.guard.ports import PerfActionRefused
from tradingtools.control.v1 import control_pb2 as cpb
from tradingtools.control.v1 import control_pb2_grpc as cgrpc


class GrpcControl:
    """``InternalControlService.ApplyPerfAction`` (the channel carries the internal token)."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.stub = cgrpc.InternalControlServiceStub(channel)
        self.timeout_s = timeout_s

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str) -> bool:
        """Apply a decision; True when applied now."""
        request = cpb.ApplyPerfActionRequest(
            id=subscription_id, action=cpb.PERF_ACTION_PAUSE if action == "PAUSE" else cpb.PERF_ACTION_SCALE,
            multiplier=fmt(multiplier) if multiplier is not None else "", reason=reason, decision_id=decision_id)
        try:
            resp = await self.stub.ApplyPerfAction(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in PERMANENT:
                raise PerfActionRefused(f"{exc.code().name}: {exc.details()}") from exc
            raise
        return bool(resp.applied)
