"""A server's stop ends within its grace and a small margin, and runs its stop hooks, even when a call outlives gRPC's
cancellation of it (gRPC cancels a call once; a library can swallow that one cancellation, as Python 3.11's
``asyncio.wait_for`` does when what it waits for completes at the moment it is cancelled): gRPC's shutdown does not
wait for the handler's task."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
import pytest

from common.grpcserver import GrpcServer, start_server
from tests.helpers import INTERNAL, eventually

pytestmark = pytest.mark.integration

SERVICE = "tt.test.Slow"
GRACE_S = 0.3
MARGIN_S = 5.0  # far below the call's own wait


class _Slow:
    """A call that keeps waiting after its first cancellation (a second one ends it)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[object]] = []

    async def wait(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)
        return b""

    def register(self, server: grpc.aio.Server) -> Iterable[str]:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Wait": grpc.unary_unary_rpc_method_handler(self.wait, request_deserializer=bytes,
                                                        response_serializer=bytes)}),))
        return (SERVICE,)


async def test_a_stop_ends_in_time_when_a_call_outlives_its_cancellation() -> None:
    slow = _Slow()
    srv: GrpcServer = await start_server("127.0.0.1", 0, slow.register, security=INTERNAL)
    hooks: list[str] = []

    async def hook() -> None:
        hooks.append("ran")

    srv.on_stop(hook)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    call = channel.unary_unary(f"/{SERVICE}/Wait", request_serializer=bytes, response_deserializer=bytes)(
        b"", metadata=INTERNAL.metadata)
    stopping = None
    try:
        await eventually(lambda: len(slow.tasks) == 1)
        stopping = asyncio.ensure_future(srv.stop(GRACE_S))
        try:
            await asyncio.wait_for(asyncio.shield(stopping), GRACE_S + MARGIN_S)
        except TimeoutError:
            pytest.fail(f"the stop did not end within its grace ({GRACE_S} s) + {MARGIN_S} s")
        assert hooks == ["ran"]
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    finally:
        call.cancel()
        await channel.close(None)
        if stopping is not None and not stopping.done():
            stopping.cancel()
        for task in slow.tasks:
            task.cancel()
