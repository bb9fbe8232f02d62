"""Guard with the real executor and the Insiders API fake: a copy BUY fills, its exits register, the price
falls through the stop and exactly one SELL of the whole position reaches the Insiders fake."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from common.config import Secret, StorageSettings
from common.grpcserver import GrpcServer, start_server
from common.ids import hash_id
from common.marketstate import BookSnapshot, write_book
from common.streams import PRICE_TICKS, ROUTED_TRADES, DurableLog, create_stream_redis, serve_log
from common.tuning import overrides
from services.executor.app import start as start_executor
from services.executor.config import Settings as ExecutorSettings
from services.guard.app import start as start_guard
from services.guard.config import Settings as GuardSettings
from sim.insiders import InsidersFake
from sim.venue import StaticBooks
from tests.guard.standins import ASSET, CONDITION, WALLET, WALLET_ID, add_market, db, insert_subscription
from tests.helpers import INTERNAL, INTERNAL_ENV, eventually, with_tuning
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb

pytestmark = pytest.mark.integration

INSIDERS_TOKEN = "guard-test-insiders-token"
EXECUTOR_ENV = {
    **INTERNAL_ENV, "TT_EXECUTOR_GRPC_PORT": "0",
    **overrides("executor", post_timeout_s=1, query_timeout_s=1, retry_base_s=0.01, retry_cap_s=0.05,
                poll_initial_s=0.02, poll_max_s=0.1, settle_interval_s=0.05, submit_wait_s=5),
}


class _Router(egrpc.RouterServiceServicer):
    def __init__(self, log_: DurableLog) -> None:
        self.log = log_

    async def StreamRoutedTrades(self, request, context):  # type: ignore[no-untyped-def]
        def build(cursor: str, payload: bytes) -> epb.StreamRoutedTradesResponse:
            return epb.StreamRoutedTradesResponse(cursor=cursor, routed=epb.RoutedTrade.FromString(payload))

        async for item in serve_log(self.log, request.after_cursor, build):
            yield item


@pytest.fixture
async def venue(redis_url: str) -> AsyncIterator[tuple[InsidersFake, StaticBooks, Any]]:
    books = StaticBooks()
    fake = InsidersFake(books, token=INSIDERS_TOKEN, settle_s=0.02)
    await fake.start()
    redis = create_stream_redis(redis_url)
    yield fake, books, redis
    await fake.stop()
    await redis.aclose()


async def _set_book(redis: Any, books: StaticBooks, bid: str, ask: str) -> None:
    books.set(ASSET, bids=[(bid, "100000")], asks=[(ask, "100000")])
    b, a = books.levels(ASSET)
    now = int(time.time() * 1000)
    await write_book(redis, BookSnapshot(ASSET, CONDITION, tuple(b), tuple(a), Decimal("0.01"), now, now))


async def test_copy_exit_sells_the_position_once_through_the_real_executor(
        db_url: str, redis_url: str, redis: Any, venue: tuple[InsidersFake, StaticBooks, Any]) -> None:
    fake, books, stream_redis = venue
    conn = await db(db_url)
    await insert_subscription(conn, "sub_live", exits={"stopLossPct": "20", "takeProfitPct": "50"}, mode="LIVE")
    await add_market(redis, min_size="1")
    await _set_book(stream_redis, books, "0.49", "0.50")
    routed = DurableLog(stream_redis, ROUTED_TRADES, block_ms=100)
    router: GrpcServer = await start_server("127.0.0.1", 0, lambda s: (
        egrpc.add_RouterServiceServicer_to_server(_Router(routed), s), ["tradingtools.execution.v1.RouterService"])[1],
        security=INTERNAL)
    executor = await start_executor(ExecutorSettings.from_env({
        **EXECUTOR_ENV, "TT_ROUTER_GRPC_TARGET": f"127.0.0.1:{router.port}", "TT_INSIDERS_API_URL": fake.url,
        "TT_INSIDERS_API_TOKEN": INSIDERS_TOKEN}), db_url, redis_url)
    guard = await start_guard(with_tuning(GuardSettings,
        storage=StorageSettings(Secret(db_url), Secret(redis_url)), security=INTERNAL, grpc_port=0,
        executor_target=f"127.0.0.1:{executor.server.port}", ingest_target="127.0.0.1:1",
        control_target="127.0.0.1:1", tick_source="log", perf_interval_s=60, grace_s=0.0))
    try:
        # the router copies a leader BUY: $10 at 0.50
        buy = epb.Order(
            client_order_id="co_copy_buy_1", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_live",
            follower_user_id="u_123", follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=ASSET,
            condition_id=CONDITION, outcome="Yes", side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK,
            amount_usd="10", reference_price="0.50", max_slippage_bps=200, tick_size="0.01", min_order_size="1",
            mode=cpb.EXECUTION_MODE_LIVE, leader_trade_id="lt_1", received_time_ns=time.time_ns(),
            routed_time_ns=time.time_ns())
        await routed.append(epb.RoutedTrade(orders=[buy]).SerializeToString())

        async def exits() -> list[dict[str, Any]] | None:
            rows = await (await conn.execute("SELECT * FROM triggers WHERE source = 'COPY' AND state = 'ARMED'"
                                             " ORDER BY kind")).fetchall()
            return [dict(r) for r in rows] if len(rows) == 2 else None

        rows = await eventually(exits, timeout_s=20, message="copy exits registered")
        position = await (await conn.execute("SELECT size, avg_price FROM positions WHERE follower_wallet_id = %s"
                                             " AND asset_id = %s", (WALLET_ID, ASSET))).fetchone()
        assert position is not None and position["size"] > 0
        held: Decimal = position["size"]
        stop = next(r for r in rows if r["kind"] == "STOP_LOSS")
        assert stop["trigger_price"] <= position["avg_price"] * Decimal("0.8")
        # the market falls through the stop: the book moves (fake and Redis) and ingest's tick says so
        await _set_book(stream_redis, books, "0.30", "0.32")
        ticks = DurableLog(stream_redis, PRICE_TICKS)

        async def sold() -> bool:
            await ticks.append(mpb.PriceTick(asset_id=ASSET, condition_id=CONDITION, kind=mpb.TICK_KIND_PRICE_CHANGE,
                                             best_bid="0.3", best_ask="0.32", mid="0.31",
                                             received_time_ns=time.time_ns()).SerializeToString())
            return any(p.body and p.body.get("side") == "SELL" for p in fake.posts)

        await eventually(sold, timeout_s=20, interval_s=0.2, message="SELL POST at the Insiders fake")
        coid = hash_id("co", stop["id"], "1")

        async def done() -> dict[str, Any] | None:
            row = await (await conn.execute("SELECT * FROM triggers WHERE id = %s", (stop["id"],))).fetchone()
            return dict(row) if row and row["state"] == "DONE" else None

        row = await eventually(done, timeout_s=20, message="stop DONE")
        sells = [p for p in fake.posts if p.body and p.body.get("side") == "SELL"]
        assert {p.client_order_id or p.idempotency_key for p in sells} == {coid}
        assert len([p for p in sells if p.outcome == "created"]) == 1
        assert Decimal(str(sells[0].body["size"])) == held  # the whole position, never more
        assert row["filled_size"] == held
        tp = next(r for r in rows if r["kind"] == "TAKE_PROFIT")
        tp_row = await (await conn.execute("SELECT state, state_reason FROM triggers WHERE id = %s",
                                           (tp["id"],))).fetchone()
        assert tp_row is not None and (tp_row["state"], tp_row["state_reason"]) == ("CANCELLED", "OCO_SIBLING_FIRED")
        after = await (await conn.execute("SELECT size FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
                                          (WALLET_ID, ASSET))).fetchone()
        assert after is not None and after["size"] == 0
    finally:
        await guard.stop()
        await executor.stop(0)
        await router.stop(0)
        await conn.close()
