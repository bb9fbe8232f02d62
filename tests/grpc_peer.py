"""A gRPC server in a process of its own for the keepalive tests: ``python -m tests.grpc_peer`` prints its port,
then serves ``IngestService.StreamLeaderTrades`` (one trade, then an open, quiet stream) until killed."""

from __future__ import annotations

import asyncio
import sys

from common.grpcserver import GrpcServer, start_server
from tests.helpers import INTERNAL
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc


class QuietIngest(mgrpc.IngestServiceServicer):
    """One leader trade, then nothing: the stream stays open."""

    async def StreamLeaderTrades(self, request, context):  # type: ignore[no-untyped-def]
        yield mpb.StreamLeaderTradesResponse(cursor="1", event=mpb.LeaderTradeEvent(id="t1"))
        await asyncio.Event().wait()


async def start_quiet() -> GrpcServer:
    """The quiet IngestService on a free loopback port."""
    return await start_server("127.0.0.1", 0, lambda s: (
        mgrpc.add_IngestServiceServicer_to_server(QuietIngest(), s), ["tradingtools.market.v1.IngestService"])[1],
        security=INTERNAL)


async def serve() -> None:
    """Serve on a free loopback port until killed."""
    srv = await start_quiet()
    print(srv.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))
