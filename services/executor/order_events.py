"""Lifecycle events → ``OrderEvent`` protos streamed to control and guard."""

from __future__ import annotations

import asyncio
import itertools
import os
from decimal import Decimal

from common.decimals import ZERO, fmt
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.ticket import VENUE_ENUM, Ticket
from tradingtools.execution.v1 import execution_pb2 as epb

EVENT_TYPES: dict[type, epb.OrderEventType] = {
    lc.OrderTimedOut: epb.ORDER_EVENT_TYPE_UNKNOWN,
    lc.OrderAccepted: epb.ORDER_EVENT_TYPE_PLACED,
    lc.OrderPartiallyFilled: epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED,
    lc.OrderFilled: epb.ORDER_EVENT_TYPE_FILLED,
    lc.OrderCancelled: epb.ORDER_EVENT_TYPE_CANCELLED,
    lc.OrderRejected: epb.ORDER_EVENT_TYPE_REJECTED,
    lc.OrderLost: epb.ORDER_EVENT_TYPE_LOST,
    lc.OrderFailed: epb.ORDER_EVENT_TYPE_FAILED,
}


_PROCESS_TAG = os.urandom(4).hex()
_COUNTER = itertools.count()


class FirstEvent(asyncio.Event):
    """Set once an order's first OrderEvent is written; ``last``: the latest one written while it is kept (what a
    SubmitOrder waiting for it answers with, as it would read it back from ``order_events``)."""

    last: epb.OrderEvent | None = None


def event_id(now_ns: int) -> str:
    """A unique event id: time (ms), a random tag of this process and a counter (no syscall per event)."""
    return f"oev_{now_ns // 1_000_000:011x}{_PROCESS_TAG}{next(_COUNTER):x}"


def build_event(t: Ticket, life: lc.OrderLife, event: lc.Event, *, now_ns: int,
                fill_size: Decimal = ZERO, fill_price: Decimal = ZERO, fee_shares: Decimal = ZERO,
                ) -> epb.OrderEvent | None:
    """The OrderEvent announcing ``event`` (None for internal steps such as a retried attempt)."""
    kind = EVENT_TYPES.get(type(event))
    if kind is None:
        return None
    o = t.order
    latency = t.copy_latency_ms()
    ev = epb.OrderEvent(
        event_id=event_id(now_ns), type=kind, client_order_id=t.client_order_id,
        venue_order_id=life.venue_order_id, origin=o.origin, subscription_id=o.subscription_id,
        follower_wallet_id=o.follower_wallet_id, follower_proxy=o.follower_proxy, asset_id=o.asset_id,
        condition_id=o.condition_id, side=o.side, filled_size=fmt(life.filled_size),
        avg_price=fmt(life.avg_price), venue=VENUE_ENUM[t.venue], reason=life.reason if life.terminal else "",
        detail=life.detail[:500], leader_trade_id=o.leader_trade_id, trigger_id=o.trigger_id,
        copy_latency_ms=fmt(latency) if latency is not None else "", venue_time_ms=now_ns // 1_000_000,
        received_time_ns=now_ns,
    )
    if isinstance(event, lc.OrderTimedOut):
        ev.reason = event.reason
    if fill_size > 0:
        ev.fill_size = fmt(fill_size)
        ev.fill_price = fmt(fill_price)
        ev.fill_notional_usd = fmt(fill_size * fill_price)
        ev.fee_shares = fmt(fee_shares)
    elif fee_shares > 0:  # a BUY's fee reported after its shares were booked, booked alone
        ev.fee_shares = fmt(fee_shares)
    ev.trace.CopyFrom(o.trace)
    return ev
