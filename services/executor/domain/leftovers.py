"""Winning shares left over after a market's redemption: what a wallet still holds redeemable at the venue once
every redemption of that market ended.

A market's redemption takes every winning share the wallet holds when it runs. Shares that reach the chain later
(a copy filled just after the resolution) stay behind, and the venue lists them ``redeemable``. Reconciliation
finds them; this module decides whether they get another round of the wallet's redemption of that market: only
when the last round ended CONFIRMED, or FAILED with NOTHING_TO_REDEEM (the shares were not on-chain yet), at least
``grace_s`` ago (the venue's positions may still show what a confirmed round just took), and fewer than
``max_rounds`` were made. A market the engine never redeemed for the wallet is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from common.decimals import MIN_HELD_SHARES, ZERO
from common.ids import hash_id
from services.executor.domain.reconcile import AtVenue
from services.executor.domain.redemption import RedemptionState
from services.executor.domain.settlement import redemption_key

NOTHING_TO_REDEEM = "NOTHING_TO_REDEEM"
MAX_ROUNDS = 5
GRACE_S = 120.0


def round_key(follower_wallet_id: str, condition_id: str, round_no: int) -> str:
    """The venue Idempotency-Key of one round of a wallet's redemption of a market (round 0: the settlement's)."""
    if round_no == 0:
        return redemption_key(follower_wallet_id, condition_id)
    return hash_id("rk", follower_wallet_id, condition_id.lower(), str(round_no), length=40)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A market's recorded resolution."""

    asset_ids: tuple[str, ...]
    winning_asset_id: str
    neg_risk: bool


@dataclass(frozen=True, slots=True)
class LastRound:
    """The latest round of a wallet's redemption of a market."""

    key: str
    round_no: int
    state: RedemptionState
    reason: str
    ended_age_s: float  # since its last change


@dataclass(frozen=True, slots=True)
class NextRound:
    """Another round to record: the row of ``old_key`` becomes round ``round_no`` under ``key``, PENDING."""

    condition_id: str
    old_key: str
    round_no: int
    key: str
    shares: Decimal  # winning shares the venue holds
    amounts: tuple[Decimal, ...]  # neg-risk: shares per outcome index; empty otherwise


def _may_follow(last: LastRound, grace_s: float, max_rounds: int) -> bool:
    ended = last.state is RedemptionState.CONFIRMED or (
        last.state is RedemptionState.FAILED and last.reason == NOTHING_TO_REDEEM)
    return ended and last.ended_age_s >= grace_s and last.round_no + 1 < max_rounds


def next_rounds(follower_wallet_id: str, venue: Sequence[AtVenue], resolved: Mapping[str, Resolved],
                last: Mapping[str, LastRound], *, grace_s: float = GRACE_S,
                max_rounds: int = MAX_ROUNDS) -> list[NextRound]:
    """The rounds to record for the redeemable winning shares in ``venue`` (one wallet's positions), by market."""
    held: dict[str, dict[str, Decimal]] = {}
    for v in venue:
        if v.redeemable and v.size >= MIN_HELD_SHARES:
            market = held.setdefault(v.condition_id.lower(), {})
            market[v.asset_id] = market.get(v.asset_id, ZERO) + v.size
    out = []
    for condition_id, sizes in sorted(held.items()):
        res, prev = resolved.get(condition_id), last.get(condition_id)
        if res is None or prev is None or not _may_follow(prev, grace_s, max_rounds):
            continue
        winning = sizes.get(res.winning_asset_id, ZERO)
        if winning < MIN_HELD_SHARES:
            continue
        amounts = tuple(sizes.get(a, ZERO) for a in res.asset_ids) if res.neg_risk else ()
        n = prev.round_no + 1
        out.append(NextRound(condition_id, prev.key, n, round_key(follower_wallet_id, condition_id, n), winning,
                             amounts))
    return out
