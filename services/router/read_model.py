"""The state a routing decision reads, built from what the adapters return (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from common.marketstate import MarketInfo
from common.reservations import WalletReserved, from_micro
from services.router.adapters.store import PositionAgg
from services.router.domain.model import ZERO, FollowerState, MarketRules
from services.router.domain.sells import unfilled_in_flight


def market_rules(info: MarketInfo | None) -> MarketRules | None:
    """Domain rules from the cached market info."""
    if info is None:
        return None
    return MarketRules(info.tick_size, info.min_order_size, info.neg_risk, info.closed, info.accepting_orders,
                       info.market_slug, info.event_slug, info.condition_id)


def follower_state(pos: PositionAgg, res: WalletReserved, realized: Decimal,
                   balance: Decimal | None, sells: Sequence[tuple[Decimal, Decimal]] = ()) -> FollowerState:
    """A wallet's state: positions and today's realized PnL (PostgreSQL) + in-flight reservations (Redis).

    ``sells``: (reserved, shares already booked) of the wallet's in-flight SELLs of the asset known by id;
    what their fills took out of the position is no longer held back (``domain.sells.unfilled_in_flight``)."""
    shares = from_micro(res.asset_shares_micro) if res.asset_shares_micro else ZERO
    return FollowerState(
        pos.total_cost_usd, pos.market_cost_usd, pos.markets, pos.asset_size, realized,
        from_micro(res.total_usd_micro) if res.total_usd_micro else ZERO,
        from_micro(res.market_usd_micro) if res.market_usd_micro else ZERO,
        res.markets,
        unfilled_in_flight(shares, sells) if sells and shares else shares,
        balance)
