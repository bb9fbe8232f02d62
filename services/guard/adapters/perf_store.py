"""PostgreSQL adapter for performance rules: subscriptions with rules, their fills, guard's decisions."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from common.decimals import fmt
from services.guard.adapters.trigger_store import Clock, dict_pool
from services.guard.domain.perf_rules import Basis, Decision, DecisionRow, FillRow, Pnl, StatsRow, SubscriptionRules

_FILL_COLUMNS = "asset_id, side, size, price, notional_usd, fee_shares, venue, fill_time, created_at, id"
# The first read of a subscription takes all its fills, a later one those inserted by transactions its snapshot did not
# see: running when it was taken or started since (the xmin bound, an index condition of the (subscription_id, xact)
# index parameterized by each row of ``k``, skips everything older). ``OFFSET 0`` keeps the planner from flattening
# either read into a join: it made the later read a merge join that read and sorted the whole fills table every
# pass, and, with statistics from when one subscription held every fill, the first read a walk of the whole table
# for each subscription asked for (0.1-0.27 s a statement). pg_current_snapshot() is this statement's.
_MANY = (
    "SELECT s.snap::text AS snap, f.sid, f.asset_id, f.side, f.size, f.price, f.notional_usd, f.fee_shares, f.venue"
    " FROM (SELECT pg_current_snapshot() AS snap) s LEFT JOIN ("
    " SELECT k.sid, x.* FROM unnest(%(first)s::text[]) AS k(sid)"
    f" CROSS JOIN LATERAL (SELECT {_FILL_COLUMNS} FROM fills WHERE subscription_id = k.sid OFFSET 0) x"
    " UNION ALL"
    " SELECT k.sid, x.* FROM unnest(%(again)s::text[], %(seen)s::text[]) AS k(sid, seen)"
    f" CROSS JOIN LATERAL (SELECT {_FILL_COLUMNS} FROM fills WHERE subscription_id = k.sid"
    "  AND xact >= pg_snapshot_xmin(k.seen::pg_snapshot) AND NOT pg_visible_in_snapshot(xact, k.seen::pg_snapshot)"
    "  OFFSET 0) x"
    ") f ON true ORDER BY f.sid, f.fill_time, f.created_at, f.id")


# The rows are locked in subscription order first (``l``; an UPDATE ... FROM takes them in its plan's order, for a
# few subscriptions of many a hash join over the table, in the rows' order on disk), as the executor's writers of
# several take them (fill booking, settlement, reconciliation): in another order, one of them deadlocked with it.
# The locked rows carry their new value: joined with the list of values again, the two lists (no index, no hash join)
# compared every pair, 4 million for 2,000 subscriptions (tests/guard/test_unrealized_write_plan.py).
_SAVE_UNREALIZED = (
    "WITH v AS MATERIALIZED (SELECT * FROM unnest(%s::text[], %s::numeric[]) AS v(id, u)),"
    " l AS MATERIALIZED (SELECT st.subscription_id, v.u FROM subscription_stats st JOIN v ON v.id = st.subscription_id"
    "  WHERE st.unrealized_pnl_usd IS DISTINCT FROM v.u ORDER BY st.subscription_id FOR NO KEY UPDATE OF st)"
    " UPDATE subscription_stats st SET unrealized_pnl_usd = l.u FROM l"
    " WHERE st.subscription_id = l.subscription_id AND st.unrealized_pnl_usd IS DISTINCT FROM l.u")


def _basis(basis: Basis | None) -> Jsonb | None:
    return Jsonb(basis.to_json()) if basis is not None else None


class PerfStore:
    """Reads subscriptions and fills; records ``guard_perf_decisions`` (``seq``: the order recorded, which every
    read follows; ``decided_at``: guard's clock then, for information)."""

    def __init__(self, pool: AsyncConnectionPool[Any], clock: Clock) -> None:
        self.pool = dict_pool(pool)
        self.clock = clock
        self._perf: dict[str, dict[str, Any]] = {}  # perf JSON text → its object, shared by equal rules

    async def active_subscriptions(self) -> list[SubscriptionRules]:
        """ACTIVE subscriptions whose perf rules are set, with their mode and applied multiplier."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT s.id, s.perf::text AS perf, st.fills_version, s.mode, s.applied_multiplier FROM subscriptions s"
                " LEFT JOIN subscription_stats st ON st.subscription_id = s.id"
                " WHERE s.state = 'ACTIVE' AND s.perf <> '{}'::jsonb ORDER BY s.id")).fetchall()
        return [SubscriptionRules(r["id"], self._perf_of(r["perf"]), r["fills_version"], r["mode"],
                                  r["applied_multiplier"] if r["applied_multiplier"] is not None else Decimal(1))
                for r in rows]

    def _perf_of(self, text: str | None) -> dict[str, Any]:
        """The perf object of a JSON text, parsed once per distinct text (the same object each time: rules
        unchanged since the last pass are known by identity)."""
        if not text:
            return {}
        known = self._perf.get(text)
        if known is None:
            if len(self._perf) >= 10_000:
                self._perf.clear()
            known = self._perf[text] = json.loads(text)
        return known

    async def stats_rows(self) -> list[StatsRow]:
        """Subscriptions with booked fills, whatever their state (a stopped one's shares are still held)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT subscription_id AS id, fills_version, unrealized_pnl_usd FROM subscription_stats"
                " WHERE fills_version > 0 ORDER BY subscription_id")).fetchall()
        return [StatsRow(r["id"], r["fills_version"], r["unrealized_pnl_usd"]) for r in rows]

    async def save_unrealized(self, values: list[tuple[str, Decimal]]) -> int:
        """Write the subscriptions' unrealized PnL (``stats.unrealizedPnlUsd``); returns the rows changed."""
        if not values:
            return 0
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SAVE_UNREALIZED, ([sid for sid, _ in values], [u for _, u in values]))
        return cur.rowcount

    async def fills_since(self, subscription_id: str, seen: str | None) -> tuple[list[FillRow], str]:
        """The subscription's fills (with the fee shares of each BUY) that snapshot ``seen`` (a ``pg_snapshot``
        this returned before) could not see, all of them when None, in time order; with the snapshot of this
        read, for the next one."""
        fills, snapshot = await self.fills_since_many({subscription_id: seen})
        return fills[subscription_id], snapshot

    async def fills_since_many(self, seen: dict[str, str | None]) -> tuple[dict[str, list[FillRow]], str]:
        """:meth:`fills_since` for many subscriptions (id → the snapshot it was last read with) in one statement
        and one snapshot: each one's unseen fills in time order (every subscription asked for is a key), and
        the snapshot of this read."""
        fills: dict[str, list[FillRow]] = {sid: [] for sid in seen}
        if not seen:
            return fills, ""
        first = [sid for sid, snap in seen.items() if snap is None]
        again = [(sid, snap) for sid, snap in seen.items() if snap is not None]
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_MANY, {
                "first": first, "again": [sid for sid, _ in again], "seen": [snap for _, snap in again]})).fetchall()
        for r in rows:
            if r["asset_id"] is not None:
                fills[r["sid"]].append(FillRow(r["asset_id"], r["side"], r["size"], r["price"], r["notional_usd"],
                                               r["fee_shares"], r["venue"]))
        return fills, rows[0]["snap"]

    async def decisions(self, subscription_id: str) -> list[DecisionRow]:
        """Decisions recorded for a subscription, in the order recorded (``seq``; never by ``decided_at``, guard's
        wall clock, which may go back across a restart)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT decision_id, subscription_id, action, multiplier, reason, applied_at, pnl_usd, error,"
                " decided_under FROM guard_perf_decisions WHERE subscription_id = %s ORDER BY seq",
                (subscription_id,))).fetchall()
        return [DecisionRow(**r) for r in rows]

    async def unapplied(self) -> list[DecisionRow]:
        """Decisions recorded but not yet acknowledged by control (a crash in between), in the order recorded."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT decision_id, subscription_id, action, multiplier, reason, applied_at, decided_under"
                " FROM guard_perf_decisions WHERE applied_at IS NULL ORDER BY seq")).fetchall()
        return [DecisionRow(**r) for r in rows]

    async def record(self, d: Decision) -> bool:
        """Record a decision before acting on it; False when it was recorded before."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO guard_perf_decisions (decision_id, subscription_id, action, multiplier,"
                " realized_pnl_usd, unrealized_pnl_usd, pnl_usd, threshold_usd, reason, decided_at, decided_under)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (decision_id) DO NOTHING",
                (d.decision_id, d.subscription_id, d.action.value, d.multiplier, d.pnl.realized, d.pnl.unrealized,
                 d.pnl.total, d.threshold_usd, d.reason, self.clock(), _basis(d.basis)))
        return cur.rowcount == 1

    async def record_resumed(self, decision_id: str, subscription_id: str, pnl: Pnl, threshold_usd: Decimal,
                             basis: Basis | None = None) -> None:
        """Record that a loss-stopped subscription is ACTIVE again, and its PnL then (the next loss-stop counts
        from it; ``basis``: the mode it counts in); nothing for control to apply, so it is recorded applied. A
        second record changes nothing."""
        async with self.pool.connection() as conn:
            now = self.clock()
            await conn.execute(
                "INSERT INTO guard_perf_decisions (decision_id, subscription_id, action, multiplier,"
                " realized_pnl_usd, unrealized_pnl_usd, pnl_usd, threshold_usd, reason, decided_at, applied_at,"
                " applied, decided_under) VALUES (%s, %s, 'RESUMED', NULL, %s, %s, %s, %s, %s, %s, %s, true, %s)"
                " ON CONFLICT (decision_id) DO NOTHING",
                (decision_id, subscription_id, pnl.realized, pnl.unrealized, pnl.total, threshold_usd,
                 f"RESUMED_AFTER_LOSS_STOP: pnl {fmt(pnl.total)}", now, now, _basis(basis)))

    async def settle(self, decision_id: str, applied: bool, error: str = "") -> None:
        """Control answered: the decision is applied (or was before), or refused for good with ``error``."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE guard_perf_decisions SET applied_at = %s, applied = %s, error = %s WHERE decision_id = %s",
                (self.clock(), applied, error, decision_id))
