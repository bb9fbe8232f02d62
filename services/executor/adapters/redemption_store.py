"""PostgreSQL of redemptions: the due ones, each change of one (with its audit-log row and, once confirmed, its
positions REDEEMED), and the outbox of RedemptionEvents not yet on the durable log (``published_state``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from common.decimals import fmt
from services.executor.adapters.settlement_store import AUDIT, ENGINE_CALLER
from services.executor.domain.redemption import Redemption, RedemptionState


@dataclass(frozen=True, slots=True)
class RedemptionRow:
    """A stored redemption with what its POST needs."""

    redemption: Redemption
    follower_wallet_id: str
    wallet: str
    condition_id: str
    neg_risk: bool
    amounts: tuple[Decimal, ...]
    shares: Decimal
    attempts_at_load: int


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _row(r: dict[str, Any]) -> RedemptionRow:
    red = Redemption(r["redemption_key"], RedemptionState(r["state"]), r["attempts"], r["redeem_id"], r["tx_hash"],
                     r["payout_usd"], r["reason"], r["detail"], _ms(r["next_attempt_at"]), r["failures"])
    return RedemptionRow(red, r["follower_wallet_id"], r["wallet"], r["condition_id"], r["neg_risk"],
                         tuple(Decimal(a) for a in r["amounts"]), r["shares"], r["attempts"])


_COLUMNS = ("redemption_key, state, attempts, redeem_id, tx_hash, payout_usd, reason, detail, next_attempt_at,"
            " failures, follower_wallet_id, wallet, condition_id, neg_risk, amounts, shares")

_SAVE = """
UPDATE redemptions SET state = %(state)s, attempts = %(attempts)s, redeem_id = %(redeem_id)s, tx_hash = %(tx)s,
    payout_usd = %(payout)s, reason = %(reason)s, detail = %(detail)s,
    next_attempt_at = to_timestamp(%(next_ms)s / 1000.0), failures = %(failures)s, updated_at = now()
WHERE redemption_key = %(key)s
"""

_REDEEMED = """
UPDATE positions SET state = 'REDEEMED', updated_at = now()
WHERE follower_wallet_id = %s AND condition_id = %s AND state = 'RESOLVED_WON'
RETURNING id
"""


class RedemptionStore:
    """Redemptions in PostgreSQL (connections of the executor's pool: fenced by its lease)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def due(self, now_ms: int, limit: int = 64) -> list[RedemptionRow]:
        """PENDING and SUBMITTED redemptions whose next attempt is due, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM redemptions WHERE state IN ('PENDING', 'SUBMITTED')"
                " AND next_attempt_at <= to_timestamp(%s / 1000.0) ORDER BY next_attempt_at LIMIT %s",
                (now_ms, limit))
            return [_row(r) for r in await cur.fetchall()]

    async def next_due_ms(self) -> int | None:
        """When the next PENDING or SUBMITTED redemption is due (None: none is)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT min(next_attempt_at) AS at FROM redemptions"
                                     " WHERE state IN ('PENDING', 'SUBMITTED')")
            row = await cur.fetchone()
            return _ms(row["at"]) if row and row["at"] is not None else None

    async def get(self, key: str) -> RedemptionRow | None:
        """One redemption by key."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS} FROM redemptions WHERE redemption_key = %s", (key,))
            row = await cur.fetchone()
            return _row(row) if row else None

    async def save(self, row: RedemptionRow, after: Redemption, method: str) -> list[str]:
        """Store ``after`` (one transaction, with its audit row); once CONFIRMED the wallet's winning positions
        of the market are REDEEMED (their ids returned)."""
        r = after
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_SAVE, {"state": r.state.value, "attempts": r.attempts, "redeem_id": r.redeem_id,
                                       "tx": r.tx_hash, "payout": r.payout_usd, "reason": r.reason,
                                       "detail": r.detail[:500], "next_ms": r.next_attempt_ms,
                                       "failures": r.failures, "key": r.key})
            redeemed: list[str] = []
            if r.state is RedemptionState.CONFIRMED:
                cur = await conn.execute(_REDEEMED, (row.follower_wallet_id, row.condition_id))
                redeemed = [x["id"] for x in await cur.fetchall()]
            if r.state != row.redemption.state or r.state.terminal:
                await conn.execute(AUDIT, (ENGINE_CALLER, method, orjson.dumps([{
                    "type": "redemption", "id": r.key,
                    "before": {"state": row.redemption.state.value, "attempts": row.redemption.attempts},
                    "after": {"state": r.state.value, "attempts": r.attempts, "redeemId": r.redeem_id,
                              "txHash": r.tx_hash, "payoutUsd": fmt(r.payout_usd) if r.payout_usd is not None
                              else None, "reason": r.reason, "walletId": row.follower_wallet_id,
                              "conditionId": row.condition_id, "positions": redeemed}}]).decode()))
        return redeemed

    async def unpublished(self, limit: int = 256) -> list[tuple[RedemptionRow, datetime]]:
        """Redemptions whose current state's event is not on the durable log yet."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS}, updated_at FROM redemptions"
                                     " WHERE published_state <> state ORDER BY updated_at LIMIT %s", (limit,))
            return [(_row(r), r["updated_at"]) for r in await cur.fetchall()]

    async def mark_published(self, key: str, state: RedemptionState) -> None:
        """The event of ``state`` is on the log."""
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE redemptions SET published_state = %s WHERE redemption_key = %s",
                               (state.value, key))


def utc(ms: int) -> datetime:
    """Unix milliseconds as an aware datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)
