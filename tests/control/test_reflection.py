"""Server reflection the way grpcurl uses it: list the services, then build and invoke a request from
descriptors fetched over reflection (no generated code on the client side)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from services.control.app import RunningControl
from tests.control.conftest import AUTH, FOLLOWER, LEADER

pytestmark = pytest.mark.integration

BODY = {"subscription": {
    "followerUserId": "u_1", "followerWalletId": "w_1", "followerProxy": FOLLOWER, "leaderProxy": LEADER,
    "mode": "EXECUTION_MODE_PAPER", "sizing": {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25"},
}}


def _reflect(port: int) -> tuple[list[str], dict[str, Any], dict[str, Any], dict[str, Any]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = sorted(s.name for r in replies for s in r.list_services_response.service)

        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))

        def invoke(service: str, method: str, body: dict[str, Any], metadata: tuple[tuple[str, str], ...] = ()
                   ) -> dict[str, Any]:
            desc = pool.FindServiceByName(service).methods_by_name[method]
            request_cls = message_factory.GetMessageClass(desc.input_type)
            response_cls = message_factory.GetMessageClass(desc.output_type)
            call = channel.unary_unary(f"/{service}/{method}", request_serializer=request_cls.SerializeToString,
                                       response_deserializer=response_cls.FromString)
            response = call(json_format.ParseDict(body, request_cls()), metadata=metadata, timeout=10)
            return json_format.MessageToDict(response)

        created = invoke("tradingtools.control.v1.SubscriptionService", "CreateSubscription", BODY, AUTH)
        health = invoke("tradingtools.control.v1.ProbeService", "GetHealth", {})
        positions = invoke("tradingtools.control.v1.PositionService", "ListPositions", {"wallet": FOLLOWER}, AUTH)
        return services, created, health, positions


async def test_list_and_call_through_reflection(control: RunningControl) -> None:
    services, created, health, positions = await asyncio.to_thread(_reflect, control.port)
    assert services == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "tradingtools.control.v1.InternalControlService",
        "tradingtools.control.v1.PositionService",
        "tradingtools.control.v1.ProbeService",
        "tradingtools.control.v1.SubscriptionService",
        "tradingtools.control.v1.TriggerService",
    ]
    assert created["state"] == "SUBSCRIPTION_STATE_ACTIVE" and created["id"].startswith("sub_")
    assert created["sizing"] == {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25", "minOrderUsd": "1"}
    assert created["stats"]["exposureUsd"] == "0"
    assert health == {"status": "SERVING"}
    assert positions == {}  # no positions yet: an empty page
