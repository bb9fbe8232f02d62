"""What the earlier trades of a batch change for the later ones, so a batch decides exactly as if its
trades had been routed one by one (each reading Redis and PostgreSQL after the previous one was
emitted and persisted).

Routing a trade changes, for the trades after it:
- the follower wallets' in-flight reservations: each BUY order reserves its USD against the wallet
  and the market (which also counts as an open position), each SELL order its shares against the
  wallet and the asset (and its subscription's part of it) — in integer micro-units rounded up, as the emit
  script reserves them; a SELL sent with a fraction (sized by the executor later) reserves none but is in
  flight not sized yet, which sends the wallet's later SELLs of the asset out with a fraction too, whatever
  market key their trades carry;
- the leader's recorded net position in the asset (BUY adds, SELL subtracts, floored at 0).
Positions, fills and funded balances change only when the executor reports fills, never by routing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from common.reservations import WalletReserved, to_micro
from services.router.domain.model import Decision, LeaderTrade, OrderIntent, Side
from services.router.domain.positions import apply_leader_trade


@dataclass(slots=True)
class _Added:
    total_usd: int = 0
    market_usd: dict[str, int] = field(default_factory=dict)
    asset_shares: dict[str, int] = field(default_factory=dict)
    sub_shares: dict[tuple[str, str], int] = field(default_factory=dict)  # (asset, subscription) -> micro-shares
    unsized: dict[str, int] = field(default_factory=dict)  # asset -> SELLs sent with a fraction


@dataclass(slots=True)
class InFlight:
    """Reservations and leader positions added by the trades of a batch decided so far."""

    leaders: dict[tuple[str, str], Decimal | None] = field(default_factory=dict)  # (leader, asset) -> size
    _added: dict[str, _Added] = field(default_factory=dict)

    @property
    def wallets(self) -> Mapping[str, object]:
        """Wallets with reservations added so far (``reserved`` returns ``before`` for any other)."""
        return self._added

    def reserved(self, wallet: str, market: str, asset: str, before: WalletReserved) -> WalletReserved:
        """``before`` (what Redis held when the batch was read) plus what earlier trades of the batch reserved."""
        added = self._added.get(wallet)
        if added is None:
            return before
        here = added.market_usd.get(market, 0)
        markets = before.markets | added.market_usd.keys() if added.market_usd else before.markets
        return WalletReserved(before.total_usd_micro + added.total_usd,
                              before.market_usd_micro + here,
                              before.asset_shares_micro + added.asset_shares.get(asset, 0),
                              frozenset(markets))

    def selling(self, wallet: str, asset: str) -> dict[str, int] | None:
        """Micro-shares the batch's SELL copies so far reserved of the wallet's ``asset``, by subscription."""
        added = self._added.get(wallet)
        if added is None or not added.sub_shares:
            return None
        return {sub: micro for (a, sub), micro in added.sub_shares.items() if a == asset} or None

    def unsized(self, wallet: str, asset: str) -> int:
        """The batch's SELL copies so far of the wallet's ``asset`` sent with a fraction (not sized yet)."""
        added = self._added.get(wallet)
        return added.unsized.get(asset, 0) if added is not None else 0

    def leader_before(self, leader: str, asset: str, recorded: Decimal | None) -> Decimal | None:
        """The leader's net shares before the next trade: ``recorded`` (PostgreSQL) moved by the batch's trades."""
        return self.leaders.get((leader, asset), recorded)

    def add(self, trade: LeaderTrade, market: str, decisions: Iterable[Decision], recorded: Decimal | None) -> None:
        """Account for one routed trade: its orders' reservations and the leader's position change."""
        for d in decisions:
            if not isinstance(d, OrderIntent):
                continue
            added = self._added.get(d.follower_wallet_id)
            if added is None:
                added = self._added[d.follower_wallet_id] = _Added()
            if d.side is Side.BUY and d.amount_usd is not None:
                micro = to_micro(d.amount_usd)
                added.total_usd += micro
                added.market_usd[market] = added.market_usd.get(market, 0) + micro
            elif d.side is Side.SELL and d.size is not None:
                micro = to_micro(d.size)
                added.asset_shares[trade.asset_id] = added.asset_shares.get(trade.asset_id, 0) + micro
                key = (trade.asset_id, d.subscription_id)
                added.sub_shares[key] = added.sub_shares.get(key, 0) + micro
            elif d.side is Side.SELL and d.sell_fraction is not None:
                added.unsized[trade.asset_id] = added.unsized.get(trade.asset_id, 0) + 1
        key = (trade.wallet, trade.asset_id)
        self.leaders[key] = apply_leader_trade(self.leaders.get(key, recorded), trade.side, trade.size)
