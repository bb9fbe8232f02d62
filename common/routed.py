"""Reading a ``RoutedTrade``: the fields its orders share travel once, in ``RoutedTrade.common``.

The router sends a fan-out's asset, side, prices, leader trade and trace once per message instead of once per
order (a 10,000-follower trade is about a third of the bytes). Whoever reads the orders expands them first;
entries written before ``common`` existed hold whole orders and expand to themselves.
"""

from __future__ import annotations

from tradingtools.execution.v1 import execution_pb2 as epb


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
