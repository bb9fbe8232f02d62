"""What a leader trade the router sets aside (``tt:dlq:router``) means for its followers, said in its dead letter
and its alert.

The emit appends a trade's RoutedTrade and sets its routed marker in one script; its rows (``routed_trades``,
``copy_skips``, the leader's position) are written after it. An outage is retried until it is over, so a trade is
set aside only after failing every attempt for another reason, and either:

- before the emit (no marker): none of its followers got a copy from it; or
- after it (its rows failed, the marker holds the log cursor): its copies went out and the executor makes them;
  what is missing is its rows, so the leader's recorded position does not count it and the followers' later exits
  of that asset are sized on a wrong leader position (or skipped LEADER_POSITION_UNKNOWN, when it was the leader's
  first BUY there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from common.streams import ROUTED_TRADES
from services.router.adapters.redis_state import marker_key
from tradingtools.market.v1 import market_pb2 as mpb


def describe_dead_letter(redis: Any) -> Callable[[mpb.LeaderTradeEvent], Awaitable[dict[str, str]]]:
    """The ``describe`` of the router's :class:`common.consumer.DeadLetters`: ``appended`` is the log cursor of the
    trade's copies ("" when none was appended), ``effect`` says what that means."""

    async def describe(event: mpb.LeaderTradeEvent) -> dict[str, str]:
        raw = await redis.get(marker_key(event.id))
        cursor = (raw.decode() if isinstance(raw, bytes) else str(raw)) if raw else ""
        if cursor:
            effect = (f"Its copies were appended to {ROUTED_TRADES} at {cursor} and go out; its rows were not "
                      "written: the leader's recorded position misses this trade, so the followers' later exits of "
                      "this asset are sized on a wrong leader position (or skipped LEADER_POSITION_UNKNOWN).")
        else:
            effect = "It was not routed: none of its followers got a copy of it."
        return {"leader_trade_id": event.id, "appended": cursor, "effect": effect}

    return describe
