"""Routing one leader trade: read state (Redis ∥ PostgreSQL), decide for every follower (pure),
emit the RoutedTrade (one atomic Lua call), then persist the decision (one statement).

Exactly-once per leader trade:
- Redis marker set → already appended: nothing to do (but write its rows from the log when
  PostgreSQL lacks them: a crash between the emit and the persist).
- PostgreSQL row present without a marker → persisted by an earlier version before it was appended:
  its stored RoutedTrade is appended unless already appended (the outbox sweep does the same).
- Otherwise decide, emit (claims every client order id, reserves, appends and sets the marker, all or
  nothing), then persist with the log cursor. The executor sees the orders before the rows exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from opentelemetry import trace

from common.marketstate import MarketInfo
from common.reservations import NOTHING_RESERVED, WalletReserved, from_micro
from common.telemetry import extract, inject
from services.router.adapters.redis_state import RedisState
from services.router.adapters.store import PgView, PositionAgg, RouterStore
from services.router.domain.decide import invalid_trade, route
from services.router.domain.model import (
    ZERO,
    Follower,
    FollowerState,
    LeaderTrade,
    MarketRules,
    Policy,
    Side,
    SizingMode,
    Skip,
)
from services.router.domain.positions import realized_pnl_since, utc_day_start_ms
from services.router.inbound import TradeError, parse_trade
from services.router.metrics import RouterMetrics
from services.router.outbound import build_routed, market_of, order_template, routed_row
from services.router.outbox import Emitter
from tradingtools.common.v1 import common_pb2
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)


class FollowerSource(Protocol):
    """Active followers of a leader."""

    async def followers_of(self, leader: str) -> tuple[Follower, ...]:
        """Parsed active subscriptions of ``leader``."""


class MarketSource(Protocol):
    """Market info of an asset."""

    async def resolve(self, asset_id: str, condition_id: str, cached: MarketInfo | None, *,
                      has_book: bool = True) -> MarketInfo | None:
        """Info to route with, or None when unknown; stores the asset's book first when ``has_book`` is False."""


class BalanceSource(Protocol):
    """Follower wallet balances (fallback when no funded balance is on record)."""

    async def get_many(self, wallet_ids: Sequence[str]) -> dict[str, Decimal]:
        """Balances of the wallets that answered."""


@dataclass(frozen=True, slots=True)
class Knobs:
    """Router-wide policy settings (units in names)."""

    max_trade_age_ms: int = 300_000
    marketable_buy_min_usd: Decimal = Decimal(1)
    default_max_slippage_bps: int = 200


def market_rules(info: MarketInfo | None) -> MarketRules | None:
    """Domain rules from the cached market info."""
    if info is None:
        return None
    return MarketRules(info.tick_size, info.min_order_size, info.neg_risk, info.closed, info.accepting_orders,
                       info.market_slug, info.event_slug)


_NO_POSITION = PositionAgg()


def follower_states(wallets: Sequence[str], pg: PgView, reserved: dict[str, WalletReserved],
                    balances: dict[str, Decimal], day_start_ms: int) -> dict[str, FollowerState]:
    """Each wallet's state: positions and today's realized PnL (PostgreSQL) + in-flight reservations (Redis)."""
    states: dict[str, FollowerState] = {}
    for w in wallets:
        pos = pg.positions.get(w, _NO_POSITION)
        res = reserved.get(w, NOTHING_RESERVED)
        realized = ZERO
        fills = pg.fills.get(w)
        if fills:
            for rows in fills.values():
                realized += realized_pnl_since(rows, day_start_ms)
        states[w] = FollowerState(
            pos.total_cost_usd, pos.market_cost_usd, pos.markets, pos.asset_size, realized,
            from_micro(res.total_usd_micro) if res.total_usd_micro else ZERO,
            from_micro(res.market_usd_micro) if res.market_usd_micro else ZERO,
            res.markets,
            from_micro(res.asset_shares_micro) if res.asset_shares_micro else ZERO,
            balances.get(w))
    return states


class Router:
    """Handles leader trades one at a time (the consumer's handler)."""

    def __init__(self, *, followers: FollowerSource, redis_state: RedisState, store: RouterStore,
                 markets: MarketSource, balances: BalanceSource, emitter: Emitter, knobs: Knobs,
                 metrics: RouterMetrics, clock_ns: Callable[[], int] = time.time_ns,
                 tracer: trace.Tracer | None = None) -> None:
        self.followers = followers
        self.redis_state = redis_state
        self.store = store
        self.markets = markets
        self.balances = balances
        self.emitter = emitter
        self.knobs = knobs
        self.metrics = metrics
        self.clock_ns = clock_ns
        self.tracer = tracer or trace.get_tracer("tradingtools.router")

    async def handle(self, event: mpb.LeaderTradeEvent) -> None:
        """Route one leader trade (non-trade activity is ignored)."""
        if event.activity_type != mpb.ACTIVITY_TYPE_TRADE:
            self.metrics.ignored()
            return
        parent = extract(event.trace) if event.trace.traceparent else None
        with self.tracer.start_as_current_span("router.route", context=parent) as span:
            span.set_attribute("leader_trade_id", event.id)
            await self._route(event)

    async def _persist_appended(self, cursor: str, trade: LeaderTrade | None) -> None:
        """Write the rows of a RoutedTrade appended earlier (idempotent: existing rows stay)."""
        payload = await self.emitter.appended_payload(cursor)
        if payload is None:
            log.error("appended routed trade not found in the log; its rows are missing",
                      extra={"cursor": cursor})
            return
        await self.store.persist(routed_row(epb.RoutedTrade.FromString(payload), payload, trade, cursor))

    async def _route(self, event: mpb.LeaderTradeEvent) -> None:
        started = time.perf_counter()
        followers = await self.followers.followers_of(event.wallet)
        trade: LeaderTrade | None
        try:
            trade, bad = parse_trade(event), ""
        except TradeError as exc:
            trade, bad = None, str(exc)
        wallets = list(dict.fromkeys(f.follower_wallet_id for f in followers))
        now_ms = self.clock_ns() // 1_000_000
        day_start_ms = utc_day_start_ms(now_ms)
        needs_fills = trade is not None and trade.side is Side.BUY and any(
            f.risk.daily_loss_limit_usd is not None for f in followers)
        funding_wallets = list(dict.fromkeys(
            f.follower_wallet_id for f in followers if f.sizing.mode is SizingMode.PERCENT_OF_BALANCE
            and not f.invalid))
        market_id = market_of(event.condition_id.lower(), event.asset_id)
        rview, pview = await asyncio.gather(
            self.redis_state.read(event.id, event.asset_id, market_id, wallets),
            self.store.load(leader_trade_id=event.id, leader=event.wallet.lower(), asset_id=event.asset_id,
                            market=market_id, wallets=wallets,
                            fills_since_ms=day_start_ms if needs_fills else None,
                            funding_wallets=funding_wallets))
        if rview.marker is not None:
            if pview.existing is None:  # appended, then a crash before the rows were written
                await self._persist_appended(rview.marker, trade)
            self.metrics.duplicate("redis")
            return
        if pview.existing is not None:
            _cursor, now = await self.emitter.re_emit(event.id, pview.existing)
            self.metrics.duplicate("reemitted" if now else "postgres")
            return
        info = rview.market
        if trade is not None:
            info = await self.markets.resolve(event.asset_id, event.condition_id.lower(), rview.market,
                                              has_book=rview.has_book)
        market = market_rules(info)
        balances = dict(pview.funding)
        unfunded = [w for w in funding_wallets if w not in balances]
        if unfunded and trade is not None and trade.side is Side.BUY:
            balances.update(await self.balances.get_many(unfunded))
        states = follower_states(wallets, pview, rview.reserved, balances, day_start_ms)
        policy = Policy(now_ms=now_ms, max_trade_age_ms=self.knobs.max_trade_age_ms,
                        marketable_buy_min_usd=self.knobs.marketable_buy_min_usd,
                        default_max_slippage_bps=self.knobs.default_max_slippage_bps)
        decisions = (route(trade, followers, market, states, pview.leader_before, policy) if trade is not None
                     else invalid_trade(followers, bad))
        by_sub = {f.subscription_id: f for f in followers}
        routed_ns = self.clock_ns()
        ctx = common_pb2.TraceContext()
        inject(ctx)
        if not ctx.traceparent:
            ctx.CopyFrom(event.trace)
        routed = build_routed(event, decisions, by_sub, order_template(event, market, routed_ns, ctx))
        # Emit first: the Redis marker makes the append exactly-once and the executor starts at once; the
        # rows follow (awaited, so the next trade reads them), and a crash in between is healed when the
        # trade is delivered again (the marker is set, the rows are missing: written from the log).
        done = await self.emitter.emit(event.id, routed, routed.SerializeToString(), mark=False)
        if not done.appended_now:
            await self._persist_appended(done.cursor, trade)
            self.metrics.duplicate("redis")
            return
        await self.store.persist(routed_row(done.routed, done.payload, trade, done.cursor))
        copy_ms = (routed_ns - event.received_time_ns) / 1e6 if event.received_time_ns else None
        self.metrics.routed(len(routed.orders), [d.reason.value for d in decisions if isinstance(d, Skip)],
                            (time.perf_counter() - started) * 1e3, copy_ms)
