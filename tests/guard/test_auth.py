"""Guard's gRPC port takes the internal token only; its own calls send it, and a refused token is retried (a
deployment fault, fixed without touching the order) rather than given up as a rejected SELL."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import grpc
import pytest

from common.config import Secret
from common.grpcclient import channel
from services.guard.adapters.control_client import GrpcControl
from services.guard.adapters.order_client import GrpcExecutor
from tests.guard.conftest import GuardFactory
from tests.guard.standins import StandIns
from tests.helpers import INTERNAL, rpc_code
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.guard.v1 import guard_pb2 as gpb
from tradingtools.guard.v1 import guard_pb2_grpc as ggrpc

pytestmark = pytest.mark.integration
WRONG = replace(INTERNAL, tokens=(Secret("0f" * 32),))


async def test_the_trigger_event_stream_needs_the_internal_token(make_guard: GuardFactory) -> None:
    running = await make_guard()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}") as ch:
        stub = ggrpc.GuardServiceStub(ch)
        for metadata in ((), (("authorization", f"Bearer {'c0' * 32}"),)):
            call = stub.StreamTriggerEvents(gpb.StreamTriggerEventsRequest(after_cursor="0"), metadata=metadata)
            assert await rpc_code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_refused_token_is_an_outage_to_retry_not_a_rejected_order(standins: StandIns) -> None:
    async with channel(standins.target(1), WRONG) as executor_ch, channel(standins.target(2), WRONG) as control_ch:
        # the transient error the firing and perf loops retry, not SubmitRejected / PerfActionRefused
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await GrpcExecutor(executor_ch, timeout_s=5).submit(epb.Order(client_order_id="co_x"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await GrpcControl(control_ch, timeout_s=5).apply_perf_action(
                subscription_id="sub_x", action="SCALE", multiplier=Decimal(2), reason="r", decision_id="d")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert standins.executor.sells == [] and standins.control.calls == []  # refused before the servicers
