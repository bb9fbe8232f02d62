"""A real gRPC IngestService serving a durable log, for the log and consumer tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from common.grpcserver import start_server
from common.streams import DurableLog, serve_log
from tests.helpers import INTERNAL
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


class LogIngest(mgrpc.IngestServiceServicer):
    """StreamLeaderTrades from a durable log."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamLeaderTrades(self, request, context):  # type: ignore[no-untyped-def]
        def build(cursor: str, payload: bytes) -> mpb.StreamLeaderTradesResponse:
            return mpb.StreamLeaderTradesResponse(cursor=cursor, event=mpb.LeaderTradeEvent.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


async def serve_ingest_log(log_: DurableLog, port: int = 0) -> Any:
    """``log_`` behind a real IngestService.StreamLeaderTrades on 127.0.0.1."""
    return await start_server("127.0.0.1", port, lambda s: (
        mgrpc.add_IngestServiceServicer_to_server(LogIngest(log_), s), ["tradingtools.market.v1.IngestService"])[1],
        security=INTERNAL)


def leader_trades(channel: Any) -> Callable[[str], AsyncIterator[tuple[str, mpb.LeaderTradeEvent]]]:
    """A consumer's ``open_stream``: StreamLeaderTrades over ``channel`` from a cursor, as (cursor, event)."""
    stub = mgrpc.IngestServiceStub(channel)

    async def open_stream(after: str) -> AsyncIterator[tuple[str, mpb.LeaderTradeEvent]]:
        async for resp in stub.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(after_cursor=after)):
            yield resp.cursor, resp.event
    return open_stream
