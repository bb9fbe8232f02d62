"""Routing one leader trade: read state (Redis ∥ PostgreSQL), decide for every follower (pure),
persist the decision (one statement), emit the RoutedTrade (one atomic Lua call).

Exactly-once per leader trade:
- Redis marker set → already appended: nothing to do.
- PostgreSQL row present → persisted before (a crash, or the same trade from the other feed while
  the first was in flight): its stored RoutedTrade is appended unless already appended; nothing
  is decided again, so amounts never change between attempts.
- Otherwise decide, persist (the unique trade row gates every other write), then emit; a crash
  between persist and emit is healed by the next delivery of the trade or by the outbox sweep.
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
from services.router.adapters.store import PgView, PositionAgg, RoutedRow, RouterStore
from services.router.domain.decide import invalid_trade, route
from services.router.domain.model import (
    ZERO,
    Decision,
    Follower,
    FollowerState,
    LeaderTrade,
    MarketRules,
    OrderIntent,
    Policy,
    Side,
    SizingMode,
    Skip,
)
from services.router.domain.positions import leader_delta, realized_pnl_since, utc_day_start_ms
from services.router.inbound import TradeError, parse_trade
from services.router.metrics import RouterMetrics
from services.router.outbound import build_routed, market_of, order_template
from services.router.outbox import Emitter
from tradingtools.common.v1 import common_pb2
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


def routed_row(event: mpb.LeaderTradeEvent, trade: LeaderTrade | None, decisions: Sequence[Decision],
               followers: dict[str, Follower], payload: bytes) -> RoutedRow:
    """The PostgreSQL rows of one routing decision."""
    row = RoutedRow(leader_trade_id=event.id, leader_wallet=event.wallet.lower(), asset_id=event.asset_id,
                    condition_id=event.condition_id.lower(), side=trade.side.value if trade else "UNKNOWN",
                    payload=payload, leader_delta=leader_delta(trade.side, trade.size) if trade else None)
    for d in decisions:
        if isinstance(d, OrderIntent):
            row.order_ids.append(d.client_order_id)
            row.order_subs.append(d.subscription_id)
            row.order_wallets.append(d.follower_wallet_id)
            row.order_amounts.append(d.amount_usd)
            row.order_sizes.append(d.size)
            row.order_modes.append(followers[d.subscription_id].mode)
        else:
            row.skip_subs.append(d.subscription_id)
            row.skip_wallets.append(d.follower_wallet_id)
            row.skip_reasons.append(d.reason.value)
            row.skip_details.append(d.detail)
    return row


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
        payload = routed.SerializeToString()
        if not await self.store.persist(routed_row(event, trade, decisions, by_sub, payload)):
            existing = await self.store.existing(event.id)
            if existing is not None:
                await self.emitter.re_emit(event.id, existing)
            self.metrics.duplicate("postgres")
            return
        await self.emitter.emit(event.id, routed, payload)
        copy_ms = (routed_ns - event.received_time_ns) / 1e6 if event.received_time_ns else None
        self.metrics.routed(len(routed.orders), [d.reason.value for d in decisions if isinstance(d, Skip)],
                            (time.perf_counter() - started) * 1e3, copy_ms)
