"""A call without a valid token is refused before the server reads or decodes its request: UNAUTHENTICATED
whatever its bytes (never the parser's error naming the request type), and no decoding work for the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import pytest

from common.grpcclient import MAX_MESSAGE_BYTES
from common.grpcserver import GrpcServer, start_server
from tests.helpers import INTERNAL, rpc_code
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration

EXECUTOR = "tradingtools.execution.v1.ExecutorService"
PROBE = "tt.test.Probe"
WRONG = (("authorization", f"Bearer {'0f' * 32}"),)
CORRUPT = b"\xff\xff\xff"  # no protobuf message parses from these bytes
BIG = b"\x0a" + b"\xfc\xff\xff\x01" + b"x" * (MAX_MESSAGE_BYTES - 64)  # field 1, ~4 MiB long


class _Executor(egrpc.ExecutorServiceServicer):
    async def SubmitOrder(self, request: epb.SubmitOrderRequest, context: grpc.aio.ServicerContext
                          ) -> epb.SubmitOrderResponse:
        return epb.SubmitOrderResponse(client_order_id=request.order.client_order_id)

    async def StreamOrderEvents(self, request: epb.StreamOrderEventsRequest, context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[epb.StreamOrderEventsResponse]:
        yield epb.StreamOrderEventsResponse(cursor="1")


class _Probe:
    """A service whose deserializer counts the requests it decodes."""

    def __init__(self) -> None:
        self.decoded = 0

    def decode(self, data: bytes) -> bytes:
        self.decoded += 1
        return data

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    async def stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        yield b""

    def register(self, server: grpc.aio.Server) -> Iterable[str]:
        egrpc.add_ExecutorServiceServicer_to_server(_Executor(), server)
        kw: dict[str, Any] = {"request_deserializer": self.decode, "response_serializer": bytes}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PROBE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **kw),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream, **kw),
        }),))
        return (EXECUTOR, PROBE)


@pytest.fixture
async def probe() -> AsyncIterator[tuple[_Probe, GrpcServer]]:
    servicer = _Probe()
    srv = await start_server("127.0.0.1", 0, servicer.register, security=INTERNAL)
    yield servicer, srv
    await srv.stop(0)


def _raw(ch: grpc.aio.Channel, method: str, streaming: bool) -> grpc.aio.UnaryUnaryMultiCallable:
    kind = ch.unary_stream if streaming else ch.unary_unary
    return kind(method, request_serializer=bytes, response_deserializer=bytes)  # type: ignore[return-value]


@pytest.mark.parametrize(("method", "streaming"), [
    (f"/{EXECUTOR}/SubmitOrder", False), (f"/{EXECUTOR}/StreamOrderEvents", True),
])
@pytest.mark.parametrize("metadata", [(), WRONG])
async def test_a_refused_call_is_unauthenticated_whatever_its_bytes(
        probe: tuple[_Probe, GrpcServer], method: str, streaming: bool, metadata: tuple[tuple[str, str], ...]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe[1].port}") as ch:
        call = _raw(ch, method, streaming)(CORRUPT, metadata=metadata, timeout=10)
        assert await rpc_code(call) == grpc.StatusCode.UNAUTHENTICATED
        with_token = _raw(ch, method, streaming)(CORRUPT, metadata=INTERNAL.metadata, timeout=10)
        assert await rpc_code(with_token) != grpc.StatusCode.UNAUTHENTICATED  # the token check passed


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_refused_call_never_decodes_its_request(probe: tuple[_Probe, GrpcServer], streaming: bool) -> None:
    servicer, srv = probe
    method = f"/{PROBE}/{'Stream' if streaming else 'Unary'}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        for metadata in ((), WRONG, WRONG, WRONG):
            assert await rpc_code(_raw(ch, method, streaming)(BIG, metadata=metadata, timeout=10)) \
                == grpc.StatusCode.UNAUTHENTICATED
        assert servicer.decoded == 0
        assert await rpc_code(_raw(ch, method, streaming)(BIG, metadata=INTERNAL.metadata, timeout=10)) \
            == grpc.StatusCode.OK
        assert servicer.decoded == 1
