"""PostgreSQL of redemptions: the due ones, each change of one (with its audit-log row and, once confirmed, its
positions REDEEMED, archived lives included), and the outbox of RedemptionEvents not yet on the durable log
(``published_state``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from common.decimals import fmt
from common.lease import FencedWrites
from common.storage import pipelined_transaction
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
                     r["payout_usd"], r["reason"], r["detail"], _ms(r["next_attempt_at"]), r["failures"],
                     _ms(r["failing_since"]) if r["failing_since"] is not None else 0,
                     _ms(r["overdue_since"]) if r["overdue_since"] is not None else 0)
    return RedemptionRow(red, r["follower_wallet_id"], r["wallet"], r["condition_id"], r["neg_risk"],
                         tuple(Decimal(a) for a in r["amounts"]), r["shares"], r["attempts"])


_COLUMNS = ("redemption_key, state, attempts, redeem_id, tx_hash, payout_usd, reason, detail, next_attempt_at,"
            " failures, failing_since, overdue_since, follower_wallet_id, wallet, condition_id, neg_risk, amounts,"
            " shares")

# The rows a batch changes, locked first in key order, as a settlement's upsert takes a market's wallets' rows: the
# UPDATE ... FROM below takes its rows in its join's order (the table's, once it is large).
_LOCK = """
SELECT 1 FROM redemptions WHERE redemption_key = ANY(%s) ORDER BY follower_wallet_id, condition_id FOR UPDATE
"""

# A batch of changes in one statement (the executor's fence trigger runs once per statement, not per row).
_SAVE = """
UPDATE redemptions AS d SET state = r.state, attempts = r.attempts, redeem_id = r.redeem_id, tx_hash = r.tx,
    payout_usd = r.payout, reason = r.reason, detail = r.detail,
    next_attempt_at = to_timestamp(r.next_ms / 1000.0), failures = r.failures,
    failing_since = CASE WHEN (r.failures > 0 OR r.state = 'SUBMITTED') AND r.since_ms > 0
                         THEN to_timestamp(r.since_ms / 1000.0) END,
    overdue_since = CASE WHEN (r.failures > 0 OR r.state = 'SUBMITTED') AND r.overdue_ms > 0
                         THEN to_timestamp(r.overdue_ms / 1000.0) END,
    updated_at = now()
FROM json_to_recordset(%s::json) AS r(key text, state text, attempts integer, redeem_id text, tx text,
                                      payout numeric, reason text, detail text, next_ms bigint, failures integer,
                                      since_ms bigint, overdue_ms bigint)
WHERE d.redemption_key = r.key
"""

# Every winning life of the wallet in the market: the current one (positions) and those a later fill archived
# (position_history, index position_history_won). The venue's redemption took every winning share the wallet held,
# whichever life booked it. Settlement stamps the market's condition id on every position it resolves, so each
# winning life carries the redemption's.
_REDEEMED = """
WITH r AS (SELECT * FROM json_to_recordset(%s::json) AS r(w text, c text)),
archived AS (
    UPDATE position_history AS h SET state = 'REDEEMED', updated_at = now()
    FROM r WHERE h.follower_wallet_id = r.w AND h.condition_id = r.c AND h.state = 'RESOLVED_WON'
    RETURNING h.id, r.w, r.c
),
lives AS (
    UPDATE positions AS p SET state = 'REDEEMED', updated_at = now()
    FROM r WHERE p.follower_wallet_id = r.w AND p.condition_id = r.c AND p.state = 'RESOLVED_WON'
    RETURNING p.id, r.w, r.c
)
SELECT id, w, c FROM lives UNION ALL SELECT id, w, c FROM archived
"""

_PUBLISHED = """
UPDATE redemptions AS d SET published_state = r.state
FROM json_to_recordset(%s::json) AS r(key text, state text)
WHERE d.redemption_key = r.key
"""


def _change(r: Redemption) -> dict[str, Any]:
    return {"key": r.key, "state": r.state.value, "attempts": r.attempts, "redeem_id": r.redeem_id,
            "tx": r.tx_hash, "payout": fmt(r.payout_usd) if r.payout_usd is not None else None, "reason": r.reason,
            "detail": r.detail[:500], "next_ms": r.next_attempt_ms, "failures": r.failures,
            "since_ms": r.failing_since_ms, "overdue_ms": r.overdue_since_ms}


def _audit(row: RedemptionRow, r: Redemption, redeemed: list[str]) -> dict[str, Any]:
    return {"type": "redemption", "id": r.key,
            "before": {"state": row.redemption.state.value, "attempts": row.redemption.attempts},
            "after": {"state": r.state.value, "attempts": r.attempts, "redeemId": r.redeem_id, "txHash": r.tx_hash,
                      "payoutUsd": fmt(r.payout_usd) if r.payout_usd is not None else None, "reason": r.reason,
                      "walletId": row.follower_wallet_id, "conditionId": row.condition_id, "positions": redeemed}}


class RedemptionStore:
    """Redemptions in PostgreSQL (connections of the executor's pool: fenced by its lease)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *,
                 on_write_error: Callable[[BaseException], object] | None = None) -> None:
        self.pool = pool
        self.fenced = FencedWrites(on_write_error)  # told of each failed write (the lease: of the fence's refusal)

    async def due(self, now_ms: int, limit: int = 64) -> list[RedemptionRow]:
        """PENDING and SUBMITTED redemptions whose next attempt is due, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM redemptions WHERE state IN ('PENDING', 'SUBMITTED')"
                " AND next_attempt_at <= to_timestamp(%s / 1000.0) ORDER BY next_attempt_at LIMIT %s",
                (now_ms, limit))
            return [_row(r) for r in await cur.fetchall()]

    async def terms(self, keys: Sequence[str]) -> dict[str, tuple[Decimal, tuple[Decimal, ...]]]:
        """The shares and amounts of these redemptions as stored (by key): what a POST asks for once its attempt is
        on record (a late winner joins a redemption until then: the settlement's upsert)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT redemption_key, shares, amounts FROM redemptions"
                                     " WHERE redemption_key = ANY(%s)", (list(keys),))
            return {r["redemption_key"]: (r["shares"], tuple(Decimal(a) for a in r["amounts"]))
                    for r in await cur.fetchall()}

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

    async def save_many(self, changes: Sequence[tuple[RedemptionRow, Redemption]],
                        method: str) -> dict[str, list[str]]:
        """Store every ``(row, after)`` in one transaction (two round trips whatever their number), with an
        audit row for each change of state or end; once CONFIRMED the wallet's winning lives of the market are
        REDEEMED (the current one and those archived in ``position_history``). Returns the ids of the lives
        REDEEMED, by redemption key."""
        if not changes:
            return {}
        confirmed = {(row.follower_wallet_id, row.condition_id): after.key for row, after in changes
                     if after.state is RedemptionState.CONFIRMED}
        redeemed: dict[str, list[str]] = {}
        with self.fenced:
            async with self.pool.connection() as conn, pipelined_transaction(conn):
                await conn.execute(_LOCK, ([after.key for _, after in changes],))
                await conn.execute(_SAVE, (orjson.dumps([_change(after) for _, after in changes]).decode(),))
                if confirmed:
                    cur = await conn.execute(_REDEEMED, (orjson.dumps([{"w": w, "c": c} for w, c in confirmed])
                                                         .decode(),))
                    for x in await cur.fetchall():
                        redeemed.setdefault(confirmed[(x["w"], x["c"])], []).append(x["id"])
                audits = [_audit(row, after, redeemed.get(after.key, [])) for row, after in changes
                          if after.state != row.redemption.state or after.state.terminal]
                if audits:
                    await conn.execute(AUDIT, (ENGINE_CALLER, method, orjson.dumps(audits).decode()))
        return redeemed

    async def unpublished(self, limit: int = 256) -> list[tuple[RedemptionRow, datetime]]:
        """Redemptions whose current state's event is not on the durable log yet."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT {_COLUMNS}, updated_at FROM redemptions"
                                     " WHERE published_state <> state ORDER BY updated_at LIMIT %s", (limit,))
            return [(_row(r), r["updated_at"]) for r in await cur.fetchall()]

    async def mark_published(self, published: Sequence[tuple[str, RedemptionState]]) -> None:
        """The events of these (key, state) pairs are on the log (one statement)."""
        if not published:
            return
        rows = [{"key": key, "state": state.value} for key, state in published]
        with self.fenced:
            async with self.pool.connection() as conn:
                await conn.execute(_PUBLISHED, (orjson.dumps(rows).decode(),))


def utc(ms: int) -> datetime:
    """Unix milliseconds as an aware datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)
