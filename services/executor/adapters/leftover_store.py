"""PostgreSQL of leftover redemptions: a wallet's last redemption round of some markets (with the markets'
resolutions), and the move of such a row to its next round (PENDING again under the round's key, with its
audit-log row). The row keeps its (wallet, market) key; the rounds before are in the audit log and on the
redemption event stream."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from common.decimals import fmt
from common.lease import FencedWrites
from services.executor.adapters.settlement_store import AUDIT, ENGINE_CALLER
from services.executor.domain.leftovers import LastRound, NextRound, Resolved
from services.executor.domain.redemption import RedemptionState

_LOAD = """
SELECT d.condition_id, d.redemption_key, d.round, d.state, d.reason,
       extract(epoch FROM now() - d.updated_at)::float8 AS age_s, r.asset_ids, r.winning_asset_id, r.neg_risk
FROM redemptions d JOIN market_resolutions r ON r.condition_id = d.condition_id
WHERE d.follower_wallet_id = %s AND d.condition_id = ANY(%s)
"""

# Only a round whose end is on the event stream (published_state = state) moves on: its end event is never lost.
# ``old`` reads the rows before the update (a CTE sees the statement's snapshot), for the audit's "before".
_NEXT = """
WITH r AS (SELECT * FROM json_to_recordset(%(rows)s::json) AS r(old text, key text, round integer, shares numeric,
                                                                amounts json, state text)),
old AS (SELECT d.redemption_key, d.round, d.state, d.reason, d.tx_hash, d.payout_usd FROM redemptions d
        JOIN r ON d.redemption_key = r.old AND d.state = r.state
        WHERE d.follower_wallet_id = %(w)s AND d.published_state = d.state FOR UPDATE OF d)
UPDATE redemptions d SET round = r.round, redemption_key = r.key, state = 'PENDING', shares = r.shares,
    amounts = ARRAY(SELECT json_array_elements_text(r.amounts)), payout_usd = NULL, redeem_id = '', tx_hash = '',
    attempts = 0, failures = 0, reason = '', detail = '', published_state = '', next_attempt_at = now(),
    updated_at = now()
FROM r JOIN old ON old.redemption_key = r.old
WHERE d.redemption_key = r.old
RETURNING r.old, d.redemption_key, old.round AS old_round, old.state AS old_state, old.reason AS old_reason,
          old.tx_hash AS old_tx, old.payout_usd AS old_payout
"""


def _dumps(rows: Sequence[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


class LeftoverStore:
    """Reads and moves on a wallet's redemption rounds (connections of the executor's pool: fenced by its lease)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *,
                 on_write_error: Callable[[BaseException], object] | None = None) -> None:
        self.pool = pool
        self.fenced = FencedWrites(on_write_error)  # told of each failed write (the lease: of the fence's refusal)

    async def load(self, follower_wallet_id: str, condition_ids: Sequence[str]
                   ) -> tuple[dict[str, Resolved], dict[str, LastRound]]:
        """The resolutions and the wallet's last redemption round of these markets (those it has)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LOAD, (follower_wallet_id, list(condition_ids)))
            rows = await cur.fetchall()
        resolved, last = {}, {}
        for r in rows:
            cid = r["condition_id"]
            resolved[cid] = Resolved(tuple(r["asset_ids"]), r["winning_asset_id"], r["neg_risk"])
            last[cid] = LastRound(r["redemption_key"], r["round"], RedemptionState(r["state"]), r["reason"],
                                  r["age_s"])
        return resolved, last

    async def record(self, follower_wallet_id: str, rounds: Sequence[NextRound],
                     last: dict[str, LastRound]) -> list[str]:
        """Move each round's row on (one transaction); returns the keys of the rounds recorded (a row that changed
        since it was read is left alone)."""
        rows = [{"old": n.old_key, "key": n.key, "round": n.round_no, "shares": str(n.shares),
                 "amounts": [fmt(a) for a in n.amounts], "state": last[n.condition_id].state.value} for n in rounds]
        with self.fenced:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_NEXT, {"w": follower_wallet_id, "rows": _dumps(rows)})
                moved = {r["old"]: r for r in await cur.fetchall()}
                if moved:
                    await conn.execute(AUDIT, (ENGINE_CALLER, "executor.RedeemLeftover", _dumps([
                        _audit(moved[n.old_key], n) for n in rounds if n.old_key in moved])))
        return [n.key for n in rounds if n.old_key in moved]


def _audit(old: dict[str, Any], n: NextRound) -> dict[str, Any]:
    payout = old["old_payout"]
    return {"type": "redemption", "id": n.key,
            "before": {"redemptionKey": n.old_key, "round": old["old_round"], "state": old["old_state"],
                       "reason": old["old_reason"], "txHash": old["old_tx"],
                       "payoutUsd": fmt(payout) if payout is not None else None},
            "after": {"redemptionKey": n.key, "round": n.round_no, "state": "PENDING", "shares": fmt(n.shares),
                      "amounts": [fmt(a) for a in n.amounts]}}
