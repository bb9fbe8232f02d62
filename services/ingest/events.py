"""Domain values → protobuf events (``LeaderTradeEvent``)."""

from __future__ import annotations

from typing import Any

from common.decimals import fmt
from services.ingest.identity import Identified
from tradingtools.common.v1 import common_pb2
from tradingtools.market.v1 import market_pb2 as mpb

_SIDES = {"BUY": common_pb2.SIDE_BUY, "SELL": common_pb2.SIDE_SELL}
_SOURCES = {
    "RTDS_TRADES": mpb.FEED_SOURCE_RTDS_TRADES,
    "RTDS_ORDERS_MATCHED": mpb.FEED_SOURCE_RTDS_ORDERS_MATCHED,
    "DATA_API": mpb.FEED_SOURCE_DATA_API,
    "REPLAY": mpb.FEED_SOURCE_REPLAY,
}
_TYPES = {
    "TRADE": mpb.ACTIVITY_TYPE_TRADE,
    "SPLIT": mpb.ACTIVITY_TYPE_SPLIT,
    "MERGE": mpb.ACTIVITY_TYPE_MERGE,
    "REDEEM": mpb.ACTIVITY_TYPE_REDEEM,
    "CONVERSION": mpb.ACTIVITY_TYPE_CONVERSION,
}


def activity_type_enum(name: str) -> Any:
    """The ActivityType value of a data-api ``type`` (OTHER for rewards, rebates, deposits...)."""
    return _TYPES.get(name, mpb.ACTIVITY_TYPE_OTHER)


def leader_trade_event(item: Identified) -> mpb.LeaderTradeEvent:
    """The protobuf event of an identified fill (trace context is added by the caller)."""
    f = item.fill
    return mpb.LeaderTradeEvent(
        id=item.id,
        tx_hash=f.tx_hash,
        wallet=f.wallet,
        asset_id=f.asset_id,
        condition_id=f.condition_id,
        side=_SIDES.get(f.side, common_pb2.SIDE_UNSPECIFIED),
        price=fmt(f.price),
        size=fmt(f.size),
        notional_usd=fmt(f.notional),
        fee=fmt(f.fee) if f.fee is not None else "",
        outcome=f.outcome,
        outcome_index=f.outcome_index,
        market_slug=f.market_slug,
        event_slug=f.event_slug,
        title=f.title,
        activity_type=activity_type_enum(f.activity_type),
        source=_SOURCES.get(f.source, mpb.FEED_SOURCE_UNSPECIFIED),
        occurrence=item.occurrence,
        venue_time_ms=f.venue_time_ms,
        received_time_ns=f.received_ns,
    )
