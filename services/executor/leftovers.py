"""Another round of redemption for winning shares left redeemable at the venue after a market's redemption ran
(see :mod:`services.executor.domain.leftovers`): reconciliation hands over each wallet's redeemable rows, the
rounds due are recorded PENDING, and the redeemer sends them like any other."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from opentelemetry import metrics

from common.decimals import fmt
from services.executor.adapters.leftover_store import LeftoverStore
from services.executor.domain.leftovers import GRACE_S, MAX_ROUNDS, next_rounds
from services.executor.domain.reconcile import AtVenue

log = logging.getLogger(__name__)
_ROUNDS = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.redemption_rounds", description="Further redemption rounds recorded for winning shares left behind")


class LeftoverRedemptions:
    """Records the redemption rounds a wallet's redeemable shares call for."""

    def __init__(self, store: LeftoverStore, *, grace_s: float = GRACE_S, max_rounds: int = MAX_ROUNDS,
                 on_recorded: Callable[[list[str]], None] | None = None) -> None:
        _ROUNDS.add(0)
        self.store = store
        self.grace_s = grace_s
        self.max_rounds = max_rounds
        self.on_recorded = on_recorded

    async def check(self, follower_wallet_id: str, redeemable: Sequence[AtVenue]) -> list[str]:
        """Record the rounds due for these redeemable rows of one wallet; returns their keys."""
        conditions = sorted({v.condition_id.lower() for v in redeemable if v.condition_id})
        if not conditions:
            return []
        resolved, last = await self.store.load(follower_wallet_id, conditions)
        rounds = next_rounds(follower_wallet_id, redeemable, resolved, last, grace_s=self.grace_s,
                             max_rounds=self.max_rounds)
        if not rounds:
            return []
        keys = await self.store.record(follower_wallet_id, rounds, last)
        by_key = {n.key: n for n in rounds}
        for key in keys:
            n = by_key[key]
            log.warning("winning shares left redeemable after the market's redemption: another round", extra={
                "wallet_id": follower_wallet_id, "condition_id": n.condition_id, "round": n.round_no,
                "redemption_key": key, "shares": fmt(n.shares)})
        _ROUNDS.add(len(keys))
        if keys and self.on_recorded is not None:
            self.on_recorded(keys)
        return keys
