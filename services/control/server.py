"""The control gRPC server: five services behind their token checks (``auth``) and the decode guard, plus
health and reflection."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from common.grpcserver import GrpcServer, start_server
from services.control.auth import service_checks
from services.control.config import Settings
from services.control.decoding import DecodeGuard
from services.control.positions import PositionServicer
from services.control.servicer import InternalServicer, ProbeServicer, SubscriptionServicer, TriggerServicer
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in (
    "SubscriptionService", "TriggerService", "PositionService", "ProbeService", "InternalControlService"))


async def start_grpc(settings: Settings, *, subscriptions: SubscriptionServicer, triggers: TriggerServicer,
                     positions: PositionServicer, probes: ProbeServicer, internal: InternalServicer) -> GrpcServer:
    """Bind ``settings.host:settings.grpc_port`` (0 = any) and start serving."""

    def register(server: grpc.aio.Server) -> Iterable[str]:
        pb_grpc.add_SubscriptionServiceServicer_to_server(subscriptions, server)
        pb_grpc.add_TriggerServiceServicer_to_server(triggers, server)
        pb_grpc.add_PositionServiceServicer_to_server(positions, server)
        pb_grpc.add_ProbeServiceServicer_to_server(probes, server)
        pb_grpc.add_InternalControlServiceServicer_to_server(internal, server)
        return SERVICE_NAMES

    return await start_server(settings.host, settings.grpc_port, register, security=settings.security,
                              service_checks=service_checks(t.value for t in settings.tokens),
                              interceptors=[DecodeGuard()])  # after the token check (start_server puts it first)
