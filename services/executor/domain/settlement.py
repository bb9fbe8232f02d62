"""Settling positions when their market resolves (pure).

The winning outcome token pays $1 a share, every other token of the market $0. Each open position of the
market ends RESOLVED_WON or RESOLVED_LOST: its shares leave the position (nothing left to sell or to count as
exposure), its cost is freed and the payout less that cost is realized, for each subscription that holds a part of
it by its own shares and cost. A LIVE wallet holding winning shares gets one redemption of the market (paper
positions settle without one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ONE, ZERO
from common.ids import hash_id
from services.executor.domain.subscription_shares import Charge, Part, resolve, split_of

WON = "RESOLVED_WON"
LOST = "RESOLVED_LOST"
LIVE_VENUE = "INSIDERS"


@dataclass(frozen=True, slots=True)
class Resolution:
    """A market's resolution: its tokens in outcome-index order and the one that pays."""

    condition_id: str
    asset_ids: tuple[str, ...]
    winning_asset_id: str
    neg_risk: bool = False


@dataclass(frozen=True, slots=True)
class HeldPosition:
    """An open position of the resolved market, as booked."""

    follower_wallet_id: str
    wallet: str
    asset_id: str
    venue: str
    subscription_id: str | None  # the opening one
    size: Decimal
    cost_usd: Decimal
    split: Mapping[str, Part] | None = None  # as stored (None: the opening subscription's)


@dataclass(frozen=True, slots=True)
class Settled:
    """A position's end at resolution."""

    follower_wallet_id: str
    asset_id: str
    subscription_id: str | None
    state: str  # RESOLVED_WON | RESOLVED_LOST
    shares: Decimal
    payout_per_share: Decimal
    payout_usd: Decimal
    cost_usd: Decimal  # exposure freed
    realized_pnl_usd: Decimal  # payout less cost
    parts: tuple[Charge, ...] = ()  # the same for each subscription's part (they add up to the above)


@dataclass(frozen=True, slots=True)
class RedemptionPlan:
    """One redemption to make: a LIVE wallet's winning shares of a resolved market."""

    follower_wallet_id: str
    wallet: str
    condition_id: str
    key: str
    shares: Decimal
    neg_risk: bool
    amounts: tuple[Decimal, ...]  # neg-risk: shares per outcome index; empty otherwise


def redemption_key(follower_wallet_id: str, condition_id: str) -> str:
    """The venue Idempotency-Key of a wallet's redemption of a market: the same for ever, so never two."""
    return hash_id("rk", follower_wallet_id, condition_id.lower(), length=40)


def settle(resolution: Resolution, held: Sequence[HeldPosition]) -> tuple[list[Settled], list[RedemptionPlan]]:
    """Every held position of the market settled, and the redemptions its LIVE winners need."""
    settled: list[Settled] = []
    live: dict[str, tuple[str, dict[str, Decimal]]] = {}  # wallet id → (proxy, shares per token)
    for p in held:
        won = p.asset_id == resolution.winning_asset_id
        per_share = ONE if won else ZERO
        payout = p.size * per_share
        parts = resolve(split_of(p.split, p.size, p.cost_usd, p.subscription_id), per_share)
        settled.append(Settled(p.follower_wallet_id, p.asset_id, p.subscription_id, WON if won else LOST, p.size,
                               per_share, payout, p.cost_usd, payout - p.cost_usd, parts))
        if p.venue == LIVE_VENUE and p.size > 0:
            shares = live.setdefault(p.follower_wallet_id, (p.wallet, {}))[1]
            shares[p.asset_id] = shares.get(p.asset_id, ZERO) + p.size
    plans = []
    for wallet_id, (proxy, shares) in live.items():
        winning = shares.get(resolution.winning_asset_id, ZERO)
        if winning <= 0:
            continue
        amounts = tuple(shares.get(a, ZERO) for a in resolution.asset_ids) if resolution.neg_risk else ()
        plans.append(RedemptionPlan(wallet_id, proxy, resolution.condition_id,
                                    redemption_key(wallet_id, resolution.condition_id), winning,
                                    resolution.neg_risk, amounts))
    return settled, plans
