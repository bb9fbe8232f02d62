"""PostgreSQL adapter for performance rules: subscriptions with rules, their fills, guard's decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.guard.perf import Decision, FillRow
from services.guard.store import Clock, dict_pool


@dataclass(frozen=True, slots=True)
class SubscriptionRules:
    """An ACTIVE subscription, the proto3 JSON of its ``perf`` and the version of its fills (None without a
    stats row: no fill booked by the executor)."""

    id: str
    perf: dict[str, Any]
    fills_version: int | None = None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A decision recorded before."""

    decision_id: str
    subscription_id: str
    action: str
    multiplier: Any
    reason: str
    applied_at: Any


class PerfStore:
    """Reads subscriptions and fills; records ``guard_perf_decisions``."""

    def __init__(self, pool: AsyncConnectionPool[Any], clock: Clock) -> None:
        self.pool = dict_pool(pool)
        self.clock = clock

    async def active_subscriptions(self) -> list[SubscriptionRules]:
        """ACTIVE subscriptions whose perf rules are set."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT s.id, s.perf, st.fills_version FROM subscriptions s"
                " LEFT JOIN subscription_stats st ON st.subscription_id = s.id"
                " WHERE s.state = 'ACTIVE' AND s.perf <> '{}'::jsonb ORDER BY s.id")).fetchall()
        return [SubscriptionRules(r["id"], r["perf"] or {}, r["fills_version"]) for r in rows]

    async def fills(self, subscription_id: str) -> list[FillRow]:
        """A subscription's fills in time order."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT asset_id, side, size, price, notional_usd FROM fills WHERE subscription_id = %s"
                " ORDER BY fill_time, created_at, id", (subscription_id,))).fetchall()
        return [FillRow(r["asset_id"], r["side"], r["size"], r["price"], r["notional_usd"])
                for r in rows]

    async def decisions(self, subscription_id: str) -> list[DecisionRow]:
        """Decisions recorded for a subscription, oldest first."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT decision_id, subscription_id, action, multiplier, reason, applied_at"
                " FROM guard_perf_decisions WHERE subscription_id = %s ORDER BY decided_at, decision_id",
                (subscription_id,))).fetchall()
        return [DecisionRow(**r) for r in rows]

    async def unapplied(self) -> list[DecisionRow]:
        """Decisions recorded but not yet acknowledged by control (a crash in between)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT decision_id, subscription_id, action, multiplier, reason, applied_at"
                " FROM guard_perf_decisions WHERE applied_at IS NULL ORDER BY decided_at")).fetchall()
        return [DecisionRow(**r) for r in rows]

    async def record(self, d: Decision) -> bool:
        """Record a decision before acting on it; False when it was recorded before."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO guard_perf_decisions (decision_id, subscription_id, action, multiplier,"
                " realized_pnl_usd, unrealized_pnl_usd, pnl_usd, threshold_usd, reason, decided_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (decision_id) DO NOTHING",
                (d.decision_id, d.subscription_id, d.action.value, d.multiplier, d.pnl.realized, d.pnl.unrealized,
                 d.pnl.total, d.threshold_usd, d.reason, self.clock()))
        return cur.rowcount == 1

    async def settle(self, decision_id: str, applied: bool, error: str = "") -> None:
        """Control answered: the decision is applied (or was before), or refused for good with ``error``."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE guard_perf_decisions SET applied_at = %s, applied = %s, error = %s WHERE decision_id = %s",
                (self.clock(), applied, error, decision_id))
