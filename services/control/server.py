"""The control gRPC server: four services behind the decode guard and the token interceptor, plus health and
reflection."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from common.grpcserver import GrpcServer, start_server
from services.control.auth import AuthInterceptor, TokenCheck
from services.control.config import Settings
from services.control.decoding import DecodeGuard
from services.control.servicer import InternalServicer, ProbeServicer, SubscriptionServicer, TriggerServicer
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in (
    "SubscriptionService", "TriggerService", "ProbeService", "InternalControlService"))


async def start_grpc(settings: Settings, *, subscriptions: SubscriptionServicer, triggers: TriggerServicer,
                     probes: ProbeServicer, internal: InternalServicer) -> GrpcServer:
    """Bind ``settings.host:settings.grpc_port`` (0 = any) and start serving."""

    def register(server: grpc.aio.Server) -> Iterable[str]:
        pb_grpc.add_SubscriptionServiceServicer_to_server(subscriptions, server)
        pb_grpc.add_TriggerServiceServicer_to_server(triggers, server)
        pb_grpc.add_ProbeServiceServicer_to_server(probes, server)
        pb_grpc.add_InternalControlServiceServicer_to_server(internal, server)
        return SERVICE_NAMES

    check = TokenCheck(t.value for t in settings.tokens)
    return await start_server(settings.host, settings.grpc_port, register,
                              interceptors=[AuthInterceptor(check), DecodeGuard()])
