"""Routing a batch of leader trades (in stream order): read state once (one Redis script ∥ one
PostgreSQL statement), decide every trade for every follower (pure) carrying what earlier trades of
the batch reserved and moved (``domain.carry``), emit the RoutedTrades (one atomic Lua call), then
persist the decisions (one statement). A lone trade is a batch of one.

Exactly-once per leader trade:
- Redis marker set → already appended: nothing to do (but write its rows from the log when
  PostgreSQL lacks them: a crash between the emit and the persist).
- PostgreSQL row present without a marker → persisted by an earlier version before it was appended:
  its stored RoutedTrade is appended unless already appended (the outbox sweep does the same).
- Otherwise decide, emit (claims every client order id, reserves, appends and sets the marker, all or
  nothing per trade), then persist with the log cursors. The executor sees the orders before the rows.
A trade that needs one of the recovery paths, or that the emit script stops at (marker set or a client
order id already claimed meanwhile), is finished alone after the trades before it are emitted and
persisted; the trades after it are routed again from a fresh read, so they see its effects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from opentelemetry import trace

from common.marketstate import MarketInfo
from common.reservations import NOTHING_RESERVED, from_micro
from common.telemetry import extract, tracing_enabled
from services.router.adapters.redis_state import BatchView, RedisState
from services.router.adapters.store import ExistingRouted, PgBatch, RouterStore
from services.router.domain.carry import InFlight
from services.router.domain.decide import invalid_trade, route
from services.router.domain.model import (
    ZERO,
    Follower,
    FollowerState,
    LeaderTrade,
    OrderIntent,
    Policy,
    Side,
    SizingMode,
    Skip,
)
from services.router.domain.positions import utc_day_start_ms
from services.router.inbound import TradeError, parse_trade
from services.router.market_keys import markets_of_tokens
from services.router.metrics import RouterMetrics
from services.router.outbound import build_routed, market_of, order_template, routed_row, trace_context
from services.router.outbox import Emitter
from services.router.ports import BalanceSource, FollowerSource, MarketSource
from services.router.read_model import follower_state, in_token_market, market_rules, reserved_in_market, selling_by
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Knobs:
    """Router-wide policy settings (units in names)."""

    max_trade_age_ms: int = 300_000
    max_exit_age_ms: int = 21_600_000  # TT_ROUTER_MAX_EXIT_AGE_S
    marketable_buy_min_usd: Decimal = Decimal(1)
    default_max_slippage_bps: int = 200
    max_order_usd: Decimal | None = None  # TT_MAX_ORDER_USD (the service always sets it)


@dataclass(slots=True)
class _Item:
    """One leader trade of a batch, with what its reads need."""

    index: int
    event: mpb.LeaderTradeEvent
    followers: tuple[Follower, ...]
    trade: LeaderTrade | None
    bad: str
    wallets: list[str]
    market_id: str
    funding_wallets: list[str]


@dataclass(slots=True)
class _Plan:
    """A decided trade waiting for the batch's emit and persist."""

    item: _Item
    routed: epb.RoutedTrade
    payload: bytes
    skip_reasons: list[str]
    routed_ns: int
    span: trace.Span
    cut: int = 0  # orders cut to the operator ceiling


@dataclass(slots=True)
class _Read:
    redis: BatchView
    pg: PgBatch
    balances: dict[str, Decimal]
    policy: Policy


class Router:
    """Handles leader trades in batches (the consumer's batch handler) or one at a time."""

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
        self.tracer = tracer  # None: spans only while they are exported (telemetry.tracing_enabled)

    async def handle(self, event: mpb.LeaderTradeEvent) -> None:
        """Route one leader trade (non-trade activity is ignored)."""
        await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[mpb.LeaderTradeEvent]) -> None:
        """Route leader trades in stream order, deciding exactly as one by one would (safe to re-run item
        by item after a failure: every trade is exactly-once on its own)."""
        pending: list[mpb.LeaderTradeEvent] = []
        for ev in events:
            if ev.activity_type != mpb.ACTIVITY_TYPE_TRADE:
                self.metrics.ignored()
            else:
                pending.append(ev)
        while pending:
            pending = await self._route(pending)

    async def _item(self, index: int, event: mpb.LeaderTradeEvent) -> _Item:
        followers = await self.followers.followers_of(event.wallet)
        trade: LeaderTrade | None
        try:
            trade, bad = parse_trade(event), ""
        except TradeError as exc:
            trade, bad = None, str(exc)
        wallets = list(dict.fromkeys(f.follower_wallet_id for f in followers))
        funding = list(dict.fromkeys(
            f.follower_wallet_id for f in followers if f.sizing.mode is SizingMode.PERCENT_OF_BALANCE
            and not f.invalid))
        return _Item(index, event, followers, trade, bad, wallets,
                     market_of(event.condition_id.lower(), event.asset_id), funding)

    async def _place(self, items: list[_Item], infos: dict[str, MarketInfo | None]) -> None:
        """Trades without a condition id take their token's market's (for the reads, the caps and their orders)."""
        lacking = [it for it in items if it.trade is not None and not it.trade.condition_id]
        found = await markets_of_tokens(list(dict.fromkeys(it.event.asset_id for it in lacking)), self.redis_state,
                                        self.markets, infos)
        for it in lacking:
            if (condition := found.get(it.event.asset_id)) and it.trade is not None:
                it.market_id, it.trade = condition, replace(it.trade, condition_id=condition)

    async def _read(self, items: list[_Item]) -> _Read:
        """One Redis script, then one PostgreSQL statement, for the whole batch.

        In this order: the executor commits a fill (the position grows) before it releases the order's
        reservation, so a snapshot taken after the reservations were read sees every fill whose
        reservation was gone; read the other way round, a fill committed and released in between counted
        neither as a position nor as a reservation, and a copy could pass the follower's caps.

        The other way, a fill committed before the snapshot whose reservation is still read counts twice: for
        BUY caps that only errs on the safe side, but for a SELL it hides shares the follower still holds
        (its position already fell, the SELL still reserves them): a leader's exit found nothing to sell. So
        the Redis read lists the in-flight SELLs behind the reserved shares and the same statement reads the
        shares their fills already booked; only the rest is held back (``domain.sells.unfilled_in_flight``)."""
        now_ms = self.clock_ns() // 1_000_000
        day_start_ms = utc_day_start_ms(now_ms)
        valid = [it for it in items if it.trade is not None]
        wallets = list(dict.fromkeys(w for it in items for w in it.wallets))
        queries: dict[tuple[str, str], dict[str, None]] = {}  # (market, asset) -> wallets, ordered and unique
        for it in valid:
            queries.setdefault((it.market_id, it.event.asset_id), {}).update(dict.fromkeys(it.wallets))
            if not it.event.condition_id and it.market_id != it.event.asset_id:  # BUYs reserved under the token too
                queries.setdefault((it.event.asset_id,) * 2, {}).update(dict.fromkeys(it.wallets))
        assets = list(dict.fromkeys(it.event.asset_id for it in valid))
        needs_pnl = any(it.trade.side is Side.BUY and any(f.risk.daily_loss_limit_usd is not None
                                                             for f in it.followers)
                          for it in valid if it.trade is not None)
        funding = list(dict.fromkeys(w for it in items for w in it.funding_wallets))
        ids = [it.event.id for it in items]
        sell_assets = {it.event.asset_id for it in valid if it.trade is not None and it.trade.side is Side.SELL}
        rview = await self.redis_state.read_batch(ids, assets, {k: list(w) for k, w in queries.items()},
                                                  sell_assets=sell_assets)
        pg = await self.store.load_batch(  # the assets as markets too: positions booked under no condition id
            leader_trade_ids=ids, wallets=wallets, assets=assets,
            markets=list(dict.fromkeys([*(it.market_id for it in valid), *assets])),
            leader_assets=list(dict.fromkeys((it.event.wallet.lower(), it.event.asset_id) for it in valid)),
            pnl_day_ms=day_start_ms if needs_pnl else None, funding_wallets=funding,
            sell_orders=rview.sell_order_ids(), sell_assets=list(sell_assets))
        balances = dict(pg.funding)
        unfunded = list(dict.fromkeys(w for it in valid if it.trade is not None and it.trade.side is Side.BUY
                                      for w in it.funding_wallets if w not in balances))
        if unfunded:
            balances.update(await self.balances.get_many(unfunded))
        policy = Policy(now_ms=now_ms, max_trade_age_ms=self.knobs.max_trade_age_ms,
                        max_exit_age_ms=self.knobs.max_exit_age_ms,
                        marketable_buy_min_usd=self.knobs.marketable_buy_min_usd,
                        default_max_slippage_bps=self.knobs.default_max_slippage_bps,
                        max_order_usd=self.knobs.max_order_usd)
        return _Read(rview, pg, balances, policy)

    async def _route(self, events: list[mpb.LeaderTradeEvent]) -> list[mpb.LeaderTradeEvent]:
        """Route a batch; returns the trades still to route (after one that had to be finished alone)."""
        started = time.perf_counter()
        items = [await self._item(i, ev) for i, ev in enumerate(events)]
        infos: dict[str, MarketInfo | None] = {}
        await self._place(items, infos)
        read = await self._read(items)
        self.metrics.batch(len(items))
        carry = InFlight()
        seen: set[str] = set()
        duplicates: list[int] = []  # indexes of trades already appended and persisted: nothing to do
        plans: list[_Plan] = []
        alone: tuple[_Item, str | None, ExistingRouted | None] | None = None
        try:
            for it in items:
                lt = it.event.id
                marker, existing = read.redis.markers.get(lt), read.pg.existing.get(lt)
                if lt in seen or (marker is not None and existing is not None):
                    duplicates.append(it.index)
                    continue
                if marker is not None or existing is not None:
                    alone = (it, marker, existing)
                    break
                seen.add(lt)
                plans.append(await self._decide(it, read, carry, infos, last=it.index == len(items) - 1))
            stop = await self._commit(plans, started)
        finally:
            for p in plans:
                p.span.end()
        if stop is not None:
            end = plans[stop].item.index
        elif alone is not None:
            end = alone[0].index
        else:
            end = len(items)
        for i in duplicates:
            if i < end:
                self.metrics.duplicate("redis")
        if stop is None and alone is not None:
            await self._recover(*alone)
        return events[end + 1:]

    async def _decide(self, it: _Item, read: _Read, carry: InFlight, infos: dict[str, MarketInfo | None],
                      *, last: bool) -> _Plan:
        """Decide one trade from the batch's reads plus what the trades before it changed."""
        event, trade = it.event, it.trade
        span = self._span(event)
        asset = event.asset_id
        info = read.redis.markets.get(asset)
        if trade is not None:
            if asset not in infos:
                infos[asset] = await self.markets.resolve(asset, event.condition_id.lower(), info,
                                                          has_book=read.redis.has_book.get(asset, True),
                                                          price=trade.price)
            info = infos[asset]
        market = market_rules(info)
        if trade is not None:
            states: dict[str, FollowerState] = {}
            market_id, carried = it.market_id, carry.wallets
            reserved, position, balance = read.redis.reserved.get, read.pg.position, read.balances.get
            realized, in_flight, sold = read.pg.realized_today.get, read.redis.sells, read.pg.sold
            unsized, token_costs, keyed = read.redis.unsized, read.pg.market_costs, market_id != asset
            placed = keyed and not event.condition_id  # in its token's market: its old copies are in the token's
            for w in it.wallets:
                res = reserved((w, market_id, asset), NOTHING_RESERVED)
                if placed and asset in res.markets:
                    res = reserved_in_market(res, reserved((w, asset, asset), NOTHING_RESERVED), market_id, asset)
                waiting = len(unsized.get((w, asset), ())) if unsized else 0  # SELLs in flight not sized yet
                if w in carried:
                    res = carry.reserved(w, market_id, asset, res)
                    waiting += carry.unsized(w, asset)
                sells = in_flight.get((w, asset)) if in_flight else None
                pos = position(w, market_id, asset)
                if keyed and asset in pos.markets:
                    pos = in_token_market(pos, token_costs.get((w, asset), ZERO), market_id, asset)
                selling = None  # whose SELLs are in flight: only a position with a split kept is sized on a part
                if pos.asset_parts is not None and (sells or w in carried):
                    selling = selling_by(sells, sold, read.redis.sell_subscriptions,
                                         carry.selling(w, asset) if w in carried else None)
                states[w] = follower_state(
                    pos, res, realized(w, ZERO), balance(w),
                    [(from_micro(micro), sold.get(coid, ZERO)) for coid, micro in sells] if sells else (), selling,
                    waiting)
            recorded = read.pg.leaders.get((trade.wallet, asset))
            decisions = route(trade, it.followers, market, states,
                              carry.leader_before(trade.wallet, asset, recorded), read.policy, read.pg.opened)
            if not last:  # what the trades after it in this batch must see
                carry.add(trade, market_id, decisions, recorded)
        else:
            decisions = invalid_trade(it.followers, it.bad)
        by_sub = {f.subscription_id: f for f in it.followers}
        routed_ns = self.clock_ns()
        ctx = trace_context(span, event.trace)
        routed = build_routed(event, decisions, by_sub, order_template(event, market, routed_ns, ctx))
        cut = sum(1 for d in decisions if isinstance(d, OrderIntent) and d.note)
        if cut:
            log.info("copies cut to the operator ceiling TT_MAX_ORDER_USD",
                     extra={"leader_trade_id": event.id, "orders": cut, "ceiling_usd": str(self.knobs.max_order_usd)})
        return _Plan(it, routed, routed.SerializeToString(), [d.reason.value for d in decisions if isinstance(d, Skip)],
                     routed_ns, span, cut)

    def _span(self, event: mpb.LeaderTradeEvent) -> trace.Span:
        """The trade's routing span (a child of the event's context), or a non-recording one when spans are
        not exported: the orders then carry the event's context on, so the trace stays one."""
        tracer = self.tracer
        if tracer is None:
            if not tracing_enabled():
                return trace.INVALID_SPAN
            tracer = self.tracer = trace.get_tracer("tradingtools.router")
        parent = extract(event.trace) if event.trace.traceparent else None
        span = tracer.start_span("router.route", context=parent)
        span.set_attribute("leader_trade_id", event.id)
        return span

    async def _commit(self, plans: list[_Plan], started: float) -> int | None:
        """Emit the plans (one script), then persist what was appended (one statement). Returns the index of
        the plan the emit stopped at (finished alone here), or None when all were appended."""
        if not plans:
            return None
        # Emit first: the Redis marker makes the append exactly-once and the executor starts at once; the
        # rows follow (awaited, so the next batch reads them), and a crash in between is healed when the
        # trade is delivered again (the marker is set, the rows are missing: written from the log).
        done = await self.emitter.emit_batch([(p.item.event.id, p.routed, p.payload) for p in plans])
        ok = plans[:len(done.cursors)]
        await asyncio.sleep(0)  # the log's readers (the executor's stream) are served before the rows are built
        await self.store.persist_many([routed_row(p.routed, p.payload, p.item.trade, cursor)
                                       for p, cursor in zip(ok, done.cursors, strict=True)])
        for p in ok:
            self._routed(p, started)
        if done.stopped is None:
            return None
        p = plans[len(ok)]
        if done.stopped.status == "dup":  # appended meanwhile: write its rows from the log
            await self._persist_appended(done.stopped.cursor, p.item.event)
            self.metrics.duplicate("redis")
            return len(ok)
        # client order ids claimed meanwhile: the emitter drops those orders and appends the rest
        single = await self.emitter.emit(p.item.event.id, p.routed, p.payload, mark=False)
        if not single.appended_now:
            await self._persist_appended(single.cursor, p.item.event)
            self.metrics.duplicate("redis")
            return len(ok)
        await self.store.persist(routed_row(single.routed, single.payload, p.item.trade, single.cursor))
        p.routed = single.routed
        self._routed(p, started)
        return len(ok)

    def _routed(self, p: _Plan, started: float) -> None:
        received = p.item.event.received_time_ns
        self.metrics.routed(len(p.routed.orders), p.skip_reasons, (time.perf_counter() - started) * 1e3,
                            (p.routed_ns - received) / 1e6 if received else None, cut=p.cut)

    async def _recover(self, it: _Item, marker: str | None, existing: ExistingRouted | None) -> None:
        """Finish a trade decided before: rows from the log, or its stored RoutedTrade appended."""
        if marker is not None:  # appended, then a crash before the rows were written
            await self._persist_appended(marker, it.event)
            self.metrics.duplicate("redis")
            return
        assert existing is not None
        _cursor, now = await self.emitter.re_emit(it.event.id, existing)
        self.metrics.duplicate("reemitted" if now else "postgres")

    async def _persist_appended(self, cursor: str, delivered: mpb.LeaderTradeEvent) -> None:
        """Write the rows of a RoutedTrade appended earlier (idempotent: existing rows stay), from the trade as
        it was routed: the one delivered again may differ (a feed's correction under the same id), and the
        leader's position must move by what the logged orders were sized on.

        An entry no longer in the log (trimmed: the rows waited longer than the log keeps what its readers have
        read, e.g. PostgreSQL down for a quarter of an hour) leaves its orders to the executor, which read them;
        the rows are written from the trade as ``delivered``, without orders, so that the leader's recorded
        position still moves by it (its later SELLs are sized on it) rather than never."""
        payload = await self.emitter.appended_payload(cursor)
        if payload is None:
            log.error("appended routed trade not found in the log; its rows are written from the trade as "
                      "delivered, without its orders", extra={"cursor": cursor, "leader_trade_id": delivered.id})
            payload = epb.RoutedTrade(trade=delivered).SerializeToString()
        routed = epb.RoutedTrade.FromString(payload)
        trade: LeaderTrade | None
        try:
            trade = parse_trade(routed.trade)
        except TradeError:
            trade = None
        await self.store.persist(routed_row(routed, payload, trade, cursor))
