"""Copies the executor declines as skips (pure): a REJECTED copy for the market's state or the follower's position
is counted with the router's skips, besides the rejection; refusals of malformed or misconfigured orders stay
rejections only."""

from __future__ import annotations

from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.ticket import Ticket
from tradingtools.execution.v1 import execution_pb2 as epb

# A copy the executor declines for the market's state or the follower's position is a skip, counted with
# the router's: a copy_skips row (one per leader trade and subscription, so a replay counts nothing) and
# the subscription's ``skipped``. Refusals of malformed or misconfigured orders stay rejections only.
SKIP_REASONS = frozenset({"INSUFFICIENT_DEPTH", "NO_LIQUIDITY", "NO_BOOK", "STALE_ORDER", "NOTHING_HELD",
                          "SELL_BELOW_MARKET_MINIMUM", "BUY_BELOW_MARKET_MINIMUM", "NO_PRICE_WITHIN_SLIPPAGE"})


def declined_copy(reason: str, origin: int, subscription_id: str) -> bool:
    """True when a REJECTED order with this reason, origin and subscription is a copy declined as a skip."""
    return reason in SKIP_REASONS and origin == epb.ORDER_ORIGIN_COPY and bool(subscription_id)


def is_skip(t: Ticket, life: OrderLife) -> bool:
    """True when the order is a copy the executor declined as a skip (:data:`SKIP_REASONS`)."""
    o = t.order
    return (life.state is State.REJECTED and declined_copy(life.reason, o.origin, o.subscription_id)
            and bool(o.leader_trade_id))
