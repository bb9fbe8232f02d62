"""The executor's gRPC port takes the internal token only: what grpcurl without it gets from SubmitOrder and the
order streams (UNAUTHENTICATED, no order placed), and that the executor's own read of the router sends it."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.executor.conftest import ASSET, Harness, make_order
from tests.helpers import INTERNAL_TOKEN, eventually, internal_channel, rpc_code
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration
BIDS = [("0.49", "1000")]
ASKS = [("0.50", "1000"), ("0.51", "1000")]


def _calls(stub: egrpc.ExecutorServiceStub, order: epb.Order, metadata: tuple[tuple[str, str], ...]) -> list[object]:
    return [stub.SubmitOrder(epb.SubmitOrderRequest(order=order), metadata=metadata, timeout=10),
            stub.StreamOrderEvents(epb.StreamOrderEventsRequest(after_cursor="0"), metadata=metadata),
            stub.StreamOrderEventBatches(epb.StreamOrderEventBatchesRequest(after_cursor="0"), metadata=metadata)]


@pytest.mark.parametrize("metadata", [
    (),  # grpcurl without -H
    (("authorization", f"Bearer {'c0' * 32}"),),  # a token of the other kind (the backend's) or a wrong one
    (("authorization", INTERNAL_TOKEN),),  # the token without its scheme
])
async def test_submit_order_and_the_streams_refuse_a_call_without_the_internal_token(
        harness: Harness, metadata: tuple[tuple[str, str], ...]) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    order = make_order(1, origin=epb.ORDER_ORIGIN_TRIGGER, side=cpb.SIDE_SELL, amount_usd="", size="5",
                       trigger_id="trg_1", leader_trade_id="")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
        for call in _calls(egrpc.ExecutorServiceStub(channel), order, metadata):
            assert await rpc_code(call) == grpc.StatusCode.UNAUTHENTICATED
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes stay open
    assert harness.fake.post_counts() == {}  # nothing was placed

    async with internal_channel(running.server.port) as channel:  # the same calls with it go through
        stub = egrpc.ExecutorServiceStub(channel)
        assert (await stub.SubmitOrder(epb.SubmitOrderRequest(order=order), timeout=10)).duplicate is False
        for call in _calls(stub, order, ())[1:]:
            assert await rpc_code(call) == grpc.StatusCode.OK
    await eventually(lambda: harness.fake.post_counts() == {order.client_order_id: 1})


async def test_routed_trades_are_read_from_the_router_with_the_internal_token(harness: Harness) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()  # the router stand-in refuses calls without the token (start_server)
    order = make_order(2)
    await harness.route(order)
    await eventually(lambda: harness.fake.post_counts() == {order.client_order_id: 1}, timeout_s=15)
