"""Real loopback servers standing in for the outside world in router tests: the CLOB REST market
info, the Insiders balance endpoint, and ingest's leader-trade gRPC stream over a DurableLog."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from common.grpcserver import GrpcServer, start_server
from common.streams import DurableLog, serve_log
from tests.helpers import INTERNAL
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict[str, Any]:
    """A recorded-format payload from tests/router/data."""
    return json.loads((DATA / name).read_text())


@dataclass
class FakeHttp:
    """CLOB ``GET /markets/{condition}`` and ``GET /book?token_id=``; Insiders ``GET /v1/wallets/{id}/balance``."""

    markets: dict[str, dict[str, Any]] = field(default_factory=dict)
    books: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    fail: bool = False
    runner: web.AppRunner | None = None
    url: str = ""

    def add_market(self, market: dict[str, Any], book: dict[str, Any] | None = None) -> None:
        self.markets[market["condition_id"]] = copy.deepcopy(market)
        if book is not None:
            self.books[book["asset_id"]] = copy.deepcopy(book)

    async def _market(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        body = self.markets.get(request.match_info["condition"])
        if self.fail or body is None:
            return web.json_response({"error": "market not found"}, status=404 if not self.fail else 503)
        return web.json_response(body)

    async def _book(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        body = self.books.get(request.query.get("token_id", ""))
        if self.fail or body is None:
            return web.json_response({"error": "No orderbook exists for the requested token id"},
                                     status=404 if not self.fail else 503)
        return web.json_response(body)

    async def _balance(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        self.auth.append(request.headers.get("Authorization", ""))
        wallet = request.match_info["wallet"]
        if self.fail or wallet not in self.balances:
            return web.json_response({"error": "WALLET_NOT_FOUND"}, status=404)
        return web.json_response({"walletId": wallet, "usd": self.balances[wallet], "asOf": "2026-11-20T10:00:00Z"})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/markets/{condition}", self._market)
        app.router.add_get("/book", self._book)
        app.router.add_get("/v1/wallets/{wallet}/balance", self._balance)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class FakeIngest(mgrpc.IngestServiceServicer):
    """Serves a DurableLog of LeaderTradeEvents the test appends to, like ingest does."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamLeaderTrades(self, request, context):  # type: ignore[no-untyped-def]
        def build(cursor: str, payload: bytes) -> mpb.StreamLeaderTradesResponse:
            return mpb.StreamLeaderTradesResponse(cursor=cursor, event=mpb.LeaderTradeEvent.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


async def start_ingest(log_: DurableLog) -> GrpcServer:
    """A real gRPC server on 127.0.0.1:0 serving ``log_`` as IngestService."""
    def register(server: Any) -> list[str]:
        mgrpc.add_IngestServiceServicer_to_server(FakeIngest(log_), server)
        return ["tradingtools.market.v1.IngestService"]

    return await start_server("127.0.0.1", 0, register, security=INTERNAL)
