"""Real gRPC stand-ins for guard's upstreams (ingest ticks, executor, control's internal RPC) and data helpers.

Each stand-in is a grpc.aio server on 127.0.0.1:0 implementing the generated servicer; streams
are served from real Redis durable logs, exactly like the real services do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from common.decimals import fmt
from common.grpcserver import GrpcServer, start_server
from common.ids import new_id
from common.marketstate import MarketInfo, write_market
from common.streams import ORDER_EVENTS, PRICE_TICKS, DurableLog, create_stream_redis, serve_log, serve_log_batches
from services.executor.servicer import order_event_batch, order_event_entry
from services.guard.domain.trigger_index import Fired
from tests.helpers import INTERNAL, INTERNAL_TOKEN, eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as ctl
from tradingtools.control.v1 import control_pb2_grpc as ctlgrpc
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

TOKEN = "ab" * 32  # the control API token (the backend's), for a real control's public services
WALLET = "0x6af75d4e4aaf700450efbac3708cce1665810ff1"
LEADER = "0xf5848342fc388908f2d25a9012cc18a0ad193979"
WALLET_ID = "w_456"
ASSET = "50349218764925301010000000000000000000000000000000000000000000000000006499"
CONDITION = "0x" + "fa38" * 16


class IngestStandIn(mgrpc.IngestServiceServicer):
    """``StreamPriceTicks`` from the PRICE_TICKS durable log."""

    def __init__(self, log_: DurableLog) -> None:
        self.log = log_
        self.connected = 0
        self.opened = 0

    async def StreamPriceTicks(self, request, context):  # type: ignore[no-untyped-def]
        def build(cursor: str, payload: bytes) -> mpb.StreamPriceTicksResponse:
            return mpb.StreamPriceTicksResponse(cursor=cursor, tick=mpb.PriceTick.FromString(payload))

        cursor = await self.log.resolve(request.after_cursor)
        self.connected += 1
        self.opened += 1
        try:
            async for item in serve_log(self.log, cursor, build):
                yield item
        finally:
            self.connected -= 1

    async def tick(self, asset_id: str = ASSET, *, bid: str = "", ask: str = "", last: str = "",
                   stale: bool = False, age_s: float = 0.0, kind: int = mpb.TICK_KIND_PRICE_CHANGE,
                   winning: str = "", condition: str = CONDITION) -> mpb.PriceTick:
        """Append one tick (received ``age_s`` seconds ago)."""
        try:
            mid = fmt((Decimal(bid) + Decimal(ask)) / 2) if bid and ask else ""
        except ArithmeticError:
            mid = "not-a-price"
        now_ns = time.time_ns()
        tick = mpb.PriceTick(asset_id=asset_id, condition_id=condition, kind=kind, best_bid=bid,  # type: ignore[arg-type]
                             best_ask=ask, mid=mid, last_trade_price=last, tick_size="0.01", stale=stale,
                             winning_asset_id=winning, venue_time_ms=now_ns // 1_000_000,
                             received_time_ns=now_ns - int(age_s * 1e9))
        await self.log.append(tick.SerializeToString())
        return tick


@dataclass
class Submitted:
    """One SubmitOrder call."""

    order: epb.Order
    duplicate: bool


class ExecutorStandIn(egrpc.ExecutorServiceServicer):
    """Idempotent ``SubmitOrder`` by client order id; optionally fills SELLs (reducing the position) and
    streams OrderEvents from the ORDER_EVENTS durable log."""

    def __init__(self, log_: DurableLog, db_url: str, *, auto_fill: bool = True) -> None:
        self.log = log_
        self.db_url = db_url
        self.auto_fill = auto_fill
        self.calls: list[Submitted] = []
        self.orders: dict[str, epb.Order] = {}
        self.last_events: dict[str, epb.OrderEvent] = {}
        self.fail_next = 0

    @property
    def sells(self) -> list[epb.Order]:
        """Distinct orders (first submission of each client order id)."""
        return list(self.orders.values())

    async def SubmitOrder(self, request, context):  # type: ignore[no-untyped-def]
        order = request.order
        if self.fail_next > 0:
            self.fail_next -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in outage")
        # Like the real executor, an order it took is carried through even if the caller goes away (kill -9).
        return await asyncio.shield(self._submit(order))

    async def _submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        duplicate = order.client_order_id in self.orders
        self.calls.append(Submitted(order, duplicate))
        if not duplicate:
            self.orders[order.client_order_id] = order
            placed = self.event(order, epb.ORDER_EVENT_TYPE_PLACED)
            self.last_events[order.client_order_id] = placed
            await self.log.append(placed.SerializeToString())
            if self.auto_fill:
                await self.fill(order)
        return epb.SubmitOrderResponse(client_order_id=order.client_order_id, duplicate=duplicate,
                                       last_event=self.last_events[order.client_order_id])

    async def StreamOrderEvents(self, request, context):  # type: ignore[no-untyped-def]
        async for item in serve_log(self.log, request.after_cursor, order_event_entry):
            yield item

    async def StreamOrderEventBatches(self, request, context):  # type: ignore[no-untyped-def]
        async for item in serve_log_batches(self.log, request.after_cursor, order_event_entry, order_event_batch,
                                            request.max_events or 256):
            yield item

    @staticmethod
    def event(order: epb.Order, kind: int, *, filled: str = "", price: str = "", reason: str = "") -> epb.OrderEvent:
        """An OrderEvent of ``order``."""
        return epb.OrderEvent(
            event_id=new_id("oev"), type=kind, client_order_id=order.client_order_id,  # type: ignore[arg-type]
            origin=order.origin, subscription_id=order.subscription_id,
            follower_wallet_id=order.follower_wallet_id, follower_proxy=order.follower_proxy,
            asset_id=order.asset_id, condition_id=order.condition_id, side=order.side, filled_size=filled,
            avg_price=price, fill_size=filled, fill_price=price, reason=reason, trigger_id=order.trigger_id,
            received_time_ns=time.time_ns())

    async def fill(self, order: epb.Order, price: str = "0.5") -> epb.OrderEvent:
        """Fill a SELL whole: book the fill and reduce the position in one transaction (as the executor
        does), then emit FILLED."""
        size = Decimal(order.size)
        async with await psycopg.AsyncConnection.connect(self.db_url) as conn, conn.transaction():
            await conn.execute("UPDATE positions SET size = GREATEST(size - %s, 0) WHERE follower_wallet_id = %s"
                               " AND asset_id = %s", (size, order.follower_wallet_id, order.asset_id))
            await conn.execute(
                "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, side,"
                " size, price, notional_usd, venue, fill_time) VALUES (%s, %s, %s, %s, %s, %s, 'SELL', %s, %s, %s,"
                " 'PAPER', now())", (new_id("fill"), order.subscription_id or None, order.follower_wallet_id,
                                     order.client_order_id, order.asset_id, order.condition_id, size,
                                     Decimal(price), size * Decimal(price)))
        ev = self.event(order, epb.ORDER_EVENT_TYPE_FILLED, filled=order.size, price=price)
        self.last_events[order.client_order_id] = ev
        await self.log.append(ev.SerializeToString())
        return ev

    async def emit(self, ev: epb.OrderEvent) -> None:
        """Emit an arbitrary event (copy fills, mirrored exits)."""
        await self.log.append(ev.SerializeToString())


@dataclass
class PerfCall:
    """One ApplyPerfAction call."""

    request: ctl.ApplyPerfActionRequest
    authorization: str


class ControlStandIn(ctlgrpc.InternalControlServiceServicer):
    """``ApplyPerfAction``: internal token checked, idempotent by decision id, applied to PostgreSQL like control."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.calls: list[PerfCall] = []
        self.applied: dict[str, ctl.ApplyPerfActionRequest] = {}

    async def ApplyPerfAction(self, request, context):  # type: ignore[no-untyped-def]
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.calls.append(PerfCall(request, auth))
        if auth != f"Bearer {INTERNAL_TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        if request.decision_id in self.applied:
            return ctl.ApplyPerfActionResponse(applied=False)
        self.applied[request.decision_id] = request
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
            if request.action == ctl.PERF_ACTION_PAUSE:
                await conn.execute("UPDATE subscriptions SET state = 'PAUSED', paused_reason = %s WHERE id = %s",
                                   (request.reason, request.id))
            else:
                await conn.execute("UPDATE subscriptions SET applied_multiplier = applied_multiplier * %s"
                                   " WHERE id = %s", (Decimal(request.multiplier), request.id))
        return ctl.ApplyPerfActionResponse(applied=True)


@dataclass
class StandIns:
    """The three stand-ins and their servers."""

    ingest: IngestStandIn
    executor: ExecutorStandIn
    control: ControlStandIn
    servers: list[GrpcServer] = field(default_factory=list)
    redis: Any = None

    def target(self, i: int) -> str:
        """``127.0.0.1:port`` of server ``i`` (0 ingest, 1 executor, 2 control)."""
        return f"127.0.0.1:{self.servers[i].port}"

    async def close(self) -> None:
        """Stop every server."""
        for srv in self.servers:
            await asyncio.wait_for(srv.stop(0), 30)
        await self.redis.aclose()


async def start_standins(db_url: str, redis_url: str, *, auto_fill: bool = True) -> StandIns:
    """Start ingest, executor and control stand-ins on free ports."""
    r = create_stream_redis(redis_url, block_s=0.2)
    ingest = IngestStandIn(DurableLog(r, PRICE_TICKS, block_ms=100))
    executor = ExecutorStandIn(DurableLog(r, ORDER_EVENTS, block_ms=100), db_url, auto_fill=auto_fill)
    control = ControlStandIn(db_url)
    out = StandIns(ingest, executor, control, redis=r)
    out.servers.append(await start_server("127.0.0.1", 0, lambda s: (
        mgrpc.add_IngestServiceServicer_to_server(ingest, s), ["tradingtools.market.v1.IngestService"])[1],
        security=INTERNAL))
    out.servers.append(await start_server("127.0.0.1", 0, lambda s: (
        egrpc.add_ExecutorServiceServicer_to_server(executor, s), ["tradingtools.execution.v1.ExecutorService"])[1],
        security=INTERNAL))
    out.servers.append(await start_server("127.0.0.1", 0, lambda s: (
        ctlgrpc.add_InternalControlServiceServicer_to_server(control, s),
        ["tradingtools.control.v1.InternalControlService"])[1], security=INTERNAL))
    return out


# --- data helpers (rows exactly as control and the executor write them) ---------------------------


def now() -> datetime:
    """Wall-clock time."""
    return datetime.now(UTC)


async def db(db_url: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection with dict rows."""
    return await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row)


async def insert_subscription(conn: psycopg.AsyncConnection[Any], sub_id: str = "sub_1", *,
                              exits: dict[str, Any] | None = None, perf: dict[str, Any] | None = None,
                              state: str = "ACTIVE", mode: str = "PAPER", leader: str = LEADER) -> str:
    """A subscription row as control writes it."""
    ts = now()
    await conn.execute(
        "INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy, leader_proxy, label,"
        " state, mode, sizing, filters, risk, exits, perf, create_time, update_time)"
        " VALUES (%s, 'u_123', %s, %s, %s, '', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (sub_id, WALLET_ID, WALLET, leader, state, mode, Jsonb({"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "25"}),
         Jsonb({}), Jsonb({}), Jsonb(exits or {}), Jsonb(perf or {}), ts, ts))
    return sub_id


async def set_position(conn: psycopg.AsyncConnection[Any], size: str, avg: str = "0.5", *,
                       asset_id: str = ASSET, venue: str = "INSIDERS") -> None:
    """The wallet's position as the executor keeps it (``venue``: where its shares were filled)."""
    await conn.execute(
        "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd, venue)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (follower_wallet_id, asset_id) DO UPDATE SET"
        " size = EXCLUDED.size, avg_price = EXCLUDED.avg_price, cost_usd = EXCLUDED.cost_usd, venue = EXCLUDED.venue",
        (WALLET_ID, asset_id, CONDITION, WALLET, Decimal(size), Decimal(avg), Decimal(size) * Decimal(avg), venue))


async def insert_trigger(conn: psycopg.AsyncConnection[Any], trigger_id: str, kind: str, *, price: str = "0",
                         trail: str = "0", activation: str = "0", size: str = "0", fraction: str = "0",
                         oco: str = "", source: str = "BEST_BID", asset_id: str = ASSET,
                         subscription_id: str | None = None, mark: str = "0",
                         created: datetime | None = None) -> str:
    """A trigger row as control's CreateTrigger writes it (``created``: control's clock, now by default), with the
    opening time of the position it guards (none when the position is not OPEN)."""
    ts = created or now()
    await conn.execute(
        "INSERT INTO triggers (id, wallet, follower_wallet_id, subscription_id, asset_id, kind, trigger_price,"
        " trail_pct, activation_price, size, sell_fraction, oco_group, price_source, state, state_reason,"
        " high_water_mark, source, create_time, update_time, position_opened_at) VALUES (%s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s, %s, %s, 'ARMED', '', %s, 'MANUAL', %s, %s, (SELECT opened_at FROM positions"
        " WHERE follower_wallet_id = %s AND asset_id = %s AND state = 'OPEN'))",
        (trigger_id, WALLET, WALLET_ID, subscription_id, asset_id, kind, Decimal(price), Decimal(trail),
         Decimal(activation), Decimal(size), Decimal(fraction), oco, source, Decimal(mark), ts, ts, WALLET_ID,
         asset_id))
    return trigger_id


async def publish_change(redis: Any, trigger_id: str, op: str = "upsert") -> int:
    """What control publishes after a trigger change."""
    version = int(await redis.incr("tt:triggers:version"))
    await redis.publish("tt:triggers:changed", orjson.dumps({"triggerId": trigger_id, "op": op, "version": version}))
    return version


async def armed_stop(conn: psycopg.AsyncConnection[Any], store: Any, trigger_id: str = "trg_sl", *,
                     fraction: str = "1", held: str | None = "100") -> Fired:
    """An ARMED stop-loss at 0.30 selling ``fraction`` of a position of ``held`` shares (None: no position), as
    the engine fires it."""
    if held is not None:
        await set_position(conn, held, "0.4")
    await insert_trigger(conn, trigger_id, "STOP_LOSS", price="0.30", fraction=fraction)
    row = await store.get(trigger_id)
    assert row is not None
    return Fired(row.spec(), Decimal("0.30"))


async def trigger_row(conn: psycopg.AsyncConnection[Any], trigger_id: str) -> dict[str, Any]:
    """The stored row."""
    row = await (await conn.execute("SELECT * FROM triggers WHERE id = %s", (trigger_id,))).fetchone()
    assert row is not None
    return dict(row)


async def add_market(redis: Any, asset_id: str = ASSET, *, min_size: str = "5", tick: str = "0.01") -> None:
    """Market info as ingest stores it."""
    await write_market(redis, MarketInfo(asset_id, CONDITION, Decimal(tick), Decimal(min_size)))


def copy_fill(order_id: str, side: int, *, filled: str, price: str, sub_id: str = "sub_1",
              asset_id: str = ASSET, kind: int = epb.ORDER_EVENT_TYPE_FILLED) -> epb.OrderEvent:
    """An OrderEvent of a copy order."""
    return epb.OrderEvent(
        event_id=new_id("oev"), type=kind, client_order_id=order_id, origin=epb.ORDER_ORIGIN_COPY,  # type: ignore[arg-type]
        subscription_id=sub_id, follower_wallet_id=WALLET_ID, follower_proxy=WALLET, asset_id=asset_id,
        condition_id=CONDITION, side=side, filled_size=filled, avg_price=price, fill_size=filled,  # type: ignore[arg-type]
        fill_price=price, received_time_ns=time.time_ns())


BUY = cpb.SIDE_BUY
SELL = cpb.SIDE_SELL


def ids_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Ids of rows."""
    return sorted(r["id"] for r in rows)


async def wait_connected(ingest: IngestStandIn) -> None:
    """Until a tick stream is open."""
    await eventually(lambda: ingest.connected > 0)
