"""The SELL a fired trigger sends, and what an order event means for the trigger (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ZERO, fmt, parse_decimal
from services.guard.domain.trigger_model import Move, Reason
from services.guard.domain.trigger_rows import TriggerRow
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb


@dataclass(frozen=True, slots=True)
class SellContext:
    """Facts about the position's market and owner gathered at fire time."""

    condition_id: str = ""
    tick_size: Decimal = ZERO
    min_order_size: Decimal = ZERO
    neg_risk: bool = False
    follower_user_id: str = ""
    mode_paper: bool = False
    max_slippage_bps: int = 300
    venue_time_ms: int = 0
    received_time_ns: int = 0


def build_sell(row: TriggerRow, *, client_order_id: str, size: Decimal, price: Decimal, ctx: SellContext,
               now_ns: int, trace: cpb.TraceContext | None = None) -> epb.Order:
    """The FAK SELL of ``size`` shares for a fired trigger (limit derived by the executor from the book)."""
    return epb.Order(
        trace=trace,
        client_order_id=client_order_id, origin=epb.ORDER_ORIGIN_TRIGGER, subscription_id=row.subscription_id,
        follower_user_id=ctx.follower_user_id, follower_wallet_id=row.follower_wallet_id,
        follower_proxy=row.wallet, asset_id=row.asset_id, condition_id=ctx.condition_id, side=cpb.SIDE_SELL,
        order_type=epb.ORDER_TYPE_FAK, size=fmt(size), limit_price="", reference_price=fmt(price),
        max_slippage_bps=ctx.max_slippage_bps, tick_size=fmt(ctx.tick_size) if ctx.tick_size else "",
        min_order_size=fmt(ctx.min_order_size), neg_risk=ctx.neg_risk,
        mode=cpb.EXECUTION_MODE_PAPER if ctx.mode_paper else cpb.EXECUTION_MODE_LIVE,
        trigger_id=row.id, received_time_ns=ctx.received_time_ns, routed_time_ns=now_ns,
    )


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What an order event means for its trigger: a move (None = still in flight) and the fill so far."""

    move: Move | None
    reason: str
    filled_size: Decimal
    avg_price: Decimal


_FAILURES = {
    epb.ORDER_EVENT_TYPE_REJECTED: Reason.ORDER_REJECTED,
    epb.ORDER_EVENT_TYPE_FAILED: Reason.ORDER_FAILED,
    epb.ORDER_EVENT_TYPE_LOST: Reason.ORDER_LOST,
    epb.ORDER_EVENT_TYPE_CANCELLED: Reason.ORDER_CANCELLED,
}


def _dec(raw: str) -> Decimal:
    try:
        return parse_decimal(raw) if raw else ZERO
    except ValueError:
        return ZERO


def outcome(ev: epb.OrderEvent) -> OrderOutcome:
    """FILLED → DONE; CANCELLED after a partial fill → DONE; REJECTED/FAILED/LOST/CANCELLED → FAILED."""
    filled = _dec(ev.filled_size)
    avg = _dec(ev.avg_price)
    if ev.type == epb.ORDER_EVENT_TYPE_FILLED:
        return OrderOutcome(Move.FILL, Reason.ORDER_FILLED, filled, avg)
    if ev.type == epb.ORDER_EVENT_TYPE_CANCELLED and filled > 0:
        return OrderOutcome(Move.FILL, Reason.ORDER_FILLED, filled, avg)
    failure = _FAILURES.get(ev.type)
    if failure is not None:
        return OrderOutcome(Move.FAIL, ev.reason or failure.value, filled, avg)
    return OrderOutcome(None, "", filled, avg)


_MOVED_SHARES = frozenset({epb.ORDER_EVENT_TYPE_FILLED, epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED,
                           epb.ORDER_EVENT_TYPE_CANCELLED, *_FAILURES})


def is_fill(ev: epb.OrderEvent) -> bool:
    """True when the event reports shares changing hands: a fill, or an order that ended (cancelled, or
    REJECTED / FAILED / LOST after a partial fill) with shares filled. Handling one again changes nothing."""
    return ev.type in _MOVED_SHARES and _dec(ev.filled_size) > 0
