"""Guard's order-event source over real gRPC: batched from an executor that serves batches, event by
event from one that does not (an older executor during a rolling upgrade)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.grpcserver import start_server
from common.streams import START_OLDEST, DurableLog, create_stream_redis, serve_log, serve_log_batches
from services.executor.servicer import order_event_batch, order_event_entry
from services.guard.adapters.order_client import order_event_stream
from tests.helpers import INTERNAL, internal_channel
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration


class _OldExecutor(egrpc.ExecutorServiceServicer):
    """An executor that predates StreamOrderEventBatches (the base servicer answers UNIMPLEMENTED)."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_
        self.single_streams = 0

    async def StreamOrderEvents(self, request: epb.StreamOrderEventsRequest,
                                context: Any) -> AsyncIterator[epb.StreamOrderEventsResponse]:
        self.single_streams += 1
        async for item in serve_log(self.log, request.after_cursor, order_event_entry):
            yield item


class _Executor(_OldExecutor):
    """An executor that serves batches too (what guard asks for first)."""

    batch_streams = 0

    async def StreamOrderEventBatches(self, request: epb.StreamOrderEventBatchesRequest,
                                      context: Any) -> AsyncIterator[epb.StreamOrderEventBatchesResponse]:
        self.batch_streams += 1
        async for item in serve_log_batches(self.log, request.after_cursor, order_event_entry, order_event_batch, 2):
            yield item


async def _take(stream: AsyncIterator[tuple[str, epb.OrderEvent]], n: int) -> list[tuple[str, str]]:
    out = []
    async for cursor, event in stream:
        out.append((cursor, event.event_id))
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("servicer", ["current", "old"])
async def test_order_events_arrive_in_order_with_their_cursors_from_either_executor(redis_url: str,
                                                                                   servicer: str) -> None:
    redis = create_stream_redis(redis_url)
    log_ = DurableLog(redis, f"tt:stream:order_events:{servicer}", block_ms=100)
    cursors = [await log_.append(epb.OrderEvent(event_id=f"oev_{i}").SerializeToString()) for i in range(5)]
    impl = _OldExecutor(log_) if servicer == "old" else _Executor(log_)
    server = await start_server("127.0.0.1", 0, lambda s: (
        egrpc.add_ExecutorServiceServicer_to_server(impl, s), ["tradingtools.execution.v1.ExecutorService"])[1],
        security=INTERNAL)
    channel = internal_channel(server.port)
    try:
        open_stream = order_event_stream(channel, "guard-test")
        got = await asyncio.wait_for(_take(open_stream(START_OLDEST), 5), 10)
        assert got == [(c, f"oev_{i}") for i, c in enumerate(cursors)]
        resumed = await asyncio.wait_for(_take(open_stream(cursors[2]), 2), 10)  # a reconnect resumes after it
        assert resumed == [(cursors[3], "oev_3"), (cursors[4], "oev_4")]
        if servicer == "old":
            assert impl.single_streams == 2
        else:
            assert (impl.batch_streams, impl.single_streams) == (2, 0)
    finally:
        await channel.close()
        await server.stop(0)
        await redis.aclose()
