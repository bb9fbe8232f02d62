"""Reading a ``RoutedTrade``: the fields its orders share travel once, in ``RoutedTrade.common``.

The router sends a fan-out's asset, side, prices, leader trade and trace once per message instead of once per
order (a 10,000-follower trade is about a third of the bytes). Whoever reads the orders expands them first;
entries written before ``common`` existed hold whole orders and expand to themselves.
"""

from __future__ import annotations

from typing import Any

from tradingtools.execution.v1 import execution_pb2 as epb

# Client order ids of routed orders that will never run (their routed trade dead-lettered by the executor, or set
# aside unserved by the router's log): the executor's repair pass releases what they reserved
# (services.executor.releases).
ORPHANS = "tt:executor:orphans"


def expand(routed: epb.RoutedTrade) -> epb.RoutedTrade:
    """Merge ``routed.common`` into each of its orders and clear it (in place); returns ``routed``."""
    if routed.HasField("common"):
        shared = routed.common
        for order in routed.orders:
            order.MergeFrom(shared)
        routed.ClearField("common")
    return routed


def parse_routed(payload: bytes) -> epb.RoutedTrade:
    """A serialized RoutedTrade with its orders whole (:func:`expand`)."""
    return expand(epb.RoutedTrade.FromString(payload))


def shared_fields(routed: epb.RoutedTrade) -> epb.Order | None:
    """Where the fields every order of ``routed`` shares can be read: ``common`` when set, else its first order
    (an expanded or older RoutedTrade); None when it has no orders."""
    if routed.HasField("common"):
        return routed.common
    return routed.orders[0] if routed.orders else None


async def orphan_orders(redis: Any, payload: bytes) -> None:
    """Mark the orders of a routed trade no reader will get (set aside by its log as too large to serve) as
    orphans, so their reservations are released instead of holding their followers' headroom for good."""
    ids = [o.client_order_id for o in epb.RoutedTrade.FromString(payload).orders if o.client_order_id]
    if ids:
        await redis.sadd(ORPHANS, *ids)
