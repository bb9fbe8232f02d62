"""What the router reads through adapters: followers, market info, balances (typing.Protocol ports)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from common.marketstate import MarketInfo
from services.router.domain.model import Follower


class FollowerSource(Protocol):
    """Active followers of a leader."""

    async def followers_of(self, leader: str) -> tuple[Follower, ...]:
        """Parsed active subscriptions of ``leader``."""


class MarketSource(Protocol):
    """Market info of an asset."""

    async def resolve(self, asset_id: str, condition_id: str, cached: MarketInfo | None, *,
                      has_book: bool = True, price: Decimal | None = None) -> MarketInfo | None:
        """Info to route with, or None when unknown; stores the asset's book first when ``has_book`` is False; an
        entry the leader's ``price`` contradicts (outside its tick bounds) is read again first."""


class BalanceSource(Protocol):
    """Follower wallet balances (fallback when no funded balance is on record)."""

    async def get_many(self, wallet_ids: Sequence[str]) -> dict[str, Decimal]:
        """Balances of the wallets that answered."""
