"""Control over gRPC: ``InternalControlService.ApplyPerfAction`` (the ``Control`` port)."""

from __future__ import annotations

from decimal import Decimal

import grpc

from common.decimals import fmt
from services.guard.adapters.order_client import PERMANENT
from services.guard.domain.perf_rules import Basis
from services.guard.ports import PerfActionRefused
from tradingtools.common.v1 import common_pb2 as ccpb
from tradingtools.control.v1 import control_pb2 as cpb
from tradingtools.control.v1 import control_pb2_grpc as cgrpc

MODES = {"PAPER": ccpb.EXECUTION_MODE_PAPER, "LIVE": ccpb.EXECUTION_MODE_LIVE}
STALE_PREFIX = "decidedUnder:"  # control's FAILED_PRECONDITION for a decision made under rules changed since


class GrpcControl:
    """``InternalControlService.ApplyPerfAction`` (the channel carries the internal token)."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.stub = cgrpc.InternalControlServiceStub(channel)
        self.timeout_s = timeout_s

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str, decided_under: Basis | None = None) -> bool:
        """Apply a decision made under ``decided_under``; True when applied now. Control's refusal because those
        rules changed is PerfActionRefused with ``stale``."""
        request = cpb.ApplyPerfActionRequest(
            id=subscription_id, action=cpb.PERF_ACTION_PAUSE if action == "PAUSE" else cpb.PERF_ACTION_SCALE,
            multiplier=fmt(multiplier) if multiplier is not None else "", reason=reason, decision_id=decision_id)
        if decided_under is not None:
            r = decided_under.rules
            request.decided_under.mode = MODES.get(decided_under.mode, ccpb.EXECUTION_MODE_UNSPECIFIED)
            request.decided_under.perf.loss_stop_usd = fmt(r.loss_stop_usd)
            request.decided_under.perf.profit_scale_at_usd = fmt(r.profit_scale_at_usd)
            request.decided_under.perf.profit_scale_multiplier = fmt(r.profit_scale_multiplier)
        try:
            resp = await self.stub.ApplyPerfAction(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in PERMANENT:
                details = exc.details() or ""
                raise PerfActionRefused(f"{exc.code().name}: {details}", stale=(
                    exc.code() == grpc.StatusCode.FAILED_PRECONDITION and details.startswith(STALE_PREFIX))) from exc
            raise
        return bool(resp.applied)
