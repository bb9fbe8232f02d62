"""PostgreSQL: everything one leader trade needs in one statement, and the routing decision
persisted in one statement right after the RoutedTrade is appended (with its log cursor).

Reads (batched per table for all followers at once): the trade's routed row (recovery), positions
aggregated per wallet, today's SELL fills history for the daily loss limit, funded balances and
the leader's recorded net position in the asset.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from services.router.domain.model import ZERO, Side
from services.router.domain.positions import FillRow


@dataclass(frozen=True, slots=True)
class PositionAgg:
    """A wallet's open positions, aggregated for one trade's market and asset."""

    total_cost_usd: Decimal = ZERO
    market_cost_usd: Decimal = ZERO
    asset_size: Decimal = ZERO
    markets: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ExistingRouted:
    """A leader trade already persisted: its RoutedTrade bytes and log cursor (None: not appended yet)."""

    payload: bytes
    cursor: str | None


@dataclass(frozen=True, slots=True)
class PgView:
    """What PostgreSQL knows for one leader trade."""

    existing: ExistingRouted | None = None
    positions: dict[str, PositionAgg] = field(default_factory=dict)
    fills: dict[str, dict[str, list[FillRow]]] = field(default_factory=dict)
    funding: dict[str, Decimal] = field(default_factory=dict)
    leader_before: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RoutedRow:
    """The decision to persist for one leader trade."""

    leader_trade_id: str
    leader_wallet: str
    asset_id: str
    condition_id: str
    side: str
    payload: bytes
    leader_delta: Decimal | None  # None: the trade does not move the leader's recorded position
    order_ids: list[str] = field(default_factory=list)
    order_subs: list[str] = field(default_factory=list)
    order_wallets: list[str] = field(default_factory=list)
    order_amounts: list[Decimal | None] = field(default_factory=list)
    order_sizes: list[Decimal | None] = field(default_factory=list)
    order_modes: list[str] = field(default_factory=list)
    skip_subs: list[str] = field(default_factory=list)
    skip_wallets: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    skip_details: list[str] = field(default_factory=list)
    appended_cursor: str | None = None  # the log cursor when the RoutedTrade was appended before persisting


_EXISTING = "SELECT payload, appended_cursor FROM routed_trades WHERE leader_trade_id = %s"

# Everything one leader trade needs, in ONE statement (one round trip, no pipeline bookkeeping).
# Wallet lists arrive as one SEP-joined string and are joined against unnest(): a hash/index join,
# where "= ANY(array parameter)" would compare every row against every wallet. Per-wallet rows come
# back as compact JSON text with decimals as strings (parsed with orjson, then Decimal).
_LOAD = """
WITH w AS (SELECT unnest(string_to_array(%(wallets)s, %(sep)s)) AS id),
pos AS (
    SELECT p.follower_wallet_id AS w,
           coalesce(sum(p.cost_usd), 0) AS total_cost,
           coalesce(sum(p.cost_usd) FILTER (WHERE coalesce(nullif(p.condition_id, ''), p.asset_id) = %(market)s),
                    0) AS market_cost,
           coalesce(sum(p.size) FILTER (WHERE p.asset_id = %(asset)s), 0) AS asset_size,
           string_agg(DISTINCT coalesce(nullif(p.condition_id, ''), p.asset_id), ',') AS markets
    FROM w JOIN positions p ON p.follower_wallet_id = w.id
    WHERE p.size > 0
    GROUP BY p.follower_wallet_id
),
sold AS (
    SELECT DISTINCT x.follower_wallet_id, x.asset_id FROM w JOIN fills x ON x.follower_wallet_id = w.id
    WHERE %(want_fills)s AND x.side = 'SELL' AND x.fill_time >= %(since)s
),
fl AS (
    SELECT y.follower_wallet_id AS w, y.asset_id, y.side, y.size, y.notional_usd, y.fill_time, y.id
    FROM sold JOIN fills y ON y.follower_wallet_id = sold.follower_wallet_id AND y.asset_id = sold.asset_id
)
SELECT r.payload, r.appended_cursor, r.leader_trade_id IS NOT NULL AS routed,
    (SELECT size::text FROM leader_positions WHERE leader_wallet = %(leader)s AND asset_id = %(asset)s)
        AS leader_size,
    (SELECT json_agg(json_build_array(w, total_cost::text, market_cost::text, asset_size::text, markets))::text
        FROM pos) AS positions,
    (SELECT json_agg(json_build_array(w, asset_id, side, size::text, notional_usd::text,
                                      (extract(epoch FROM fill_time) * 1000)::bigint)
                     ORDER BY w, asset_id, fill_time, id)::text FROM fl) AS fills,
    (SELECT json_agg(json_build_array(g.follower_wallet_id, g.balance_usd::text))::text
        FROM unnest(string_to_array(%(funding)s, %(sep)s)) AS f(id)
        JOIN funding g ON g.follower_wallet_id = f.id) AS funding
FROM (SELECT 1) AS one LEFT JOIN routed_trades r ON r.leader_trade_id = %(lt)s
"""

# One statement, one implicit transaction: nothing else is written unless the trade row is new.
_PERSIST = """
WITH t AS (
    INSERT INTO routed_trades (leader_trade_id, leader_wallet, asset_id, side, orders, skips, payload,
                               appended_cursor, appended_at)
    VALUES (%(lt)s, %(leader)s, %(asset)s, %(side)s, %(n_orders)s, %(n_skips)s, %(payload)s,
            %(cursor)s::text, CASE WHEN %(cursor)s::text IS NULL THEN NULL ELSE now() END)
    ON CONFLICT (leader_trade_id) DO NOTHING
    RETURNING leader_trade_id
), o AS (
    INSERT INTO routed_orders (client_order_id, leader_trade_id, subscription_id, follower_wallet_id,
                               asset_id, condition_id, side, amount_usd, size, mode)
    SELECT u.coid, t.leader_trade_id, u.sub, u.wallet, %(asset)s, %(cond)s, %(side)s, u.amount, u.size, u.mode
    FROM t, unnest(string_to_array(%(o_ids)s, %(sep)s), string_to_array(%(o_subs)s, %(sep)s),
                   string_to_array(%(o_wallets)s, %(sep)s), string_to_array(%(o_amounts)s, %(sep)s, 'N')::numeric[],
                   string_to_array(%(o_sizes)s, %(sep)s, 'N')::numeric[], string_to_array(%(o_modes)s, %(sep)s))
         AS u(coid, sub, wallet, amount, size, mode)
    ON CONFLICT (client_order_id) DO NOTHING
    RETURNING client_order_id
), s AS (
    INSERT INTO copy_skips (subscription_id, leader_trade_id, follower_wallet_id, reason, detail)
    SELECT u.sub, t.leader_trade_id, u.wallet, u.reason, u.detail
    FROM t, unnest(string_to_array(%(s_subs)s, %(sep)s), string_to_array(%(s_wallets)s, %(sep)s),
                   string_to_array(%(s_reasons)s, %(sep)s), string_to_array(%(s_details)s, %(sep)s))
         AS u(sub, wallet, reason, detail)
    ON CONFLICT (leader_trade_id, subscription_id) DO NOTHING
    RETURNING subscription_id
), st AS (
    INSERT INTO subscription_stats (subscription_id, skipped, updated_at)
    SELECT subscription_id, count(*), now() FROM s GROUP BY subscription_id
    ON CONFLICT (subscription_id) DO UPDATE
        SET skipped = subscription_stats.skipped + EXCLUDED.skipped, updated_at = now()
), lp AS (
    INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)
    SELECT %(leader)s, %(asset)s, greatest(0, %(delta)s::numeric), t.leader_trade_id
    FROM t WHERE %(delta)s::numeric IS NOT NULL
    ON CONFLICT (leader_wallet, asset_id) DO UPDATE
        SET size = greatest(0, leader_positions.size + %(delta)s::numeric),
            last_trade_id = EXCLUDED.last_trade_id, updated_at = now()
)
SELECT (SELECT count(*) FROM t) AS inserted, (SELECT count(*) FROM o) AS orders_inserted
"""
_MARK = """
UPDATE routed_trades r SET appended_cursor = u.cursor, appended_at = now()
FROM unnest(%s::text[], %s::text[]) AS u(lt, cursor)
WHERE r.leader_trade_id = u.lt AND r.appended_cursor IS NULL
"""
_UNAPPENDED = """
SELECT leader_trade_id, payload FROM routed_trades
WHERE appended_cursor IS NULL AND routed_at < now() - make_interval(secs => %s)
ORDER BY routed_at LIMIT %s
"""


# Arrays travel as one string split server-side (string_to_array): psycopg's per-element array
# dumping costs ~1 ms per thousand elements, the split a few microseconds.
SEP = "\x1f"


def _join(values: Sequence[str]) -> str:
    return SEP.join(v.replace(SEP, " ") or " " for v in values)


def _join_num(values: Sequence[Decimal | None]) -> str:
    return SEP.join("N" if v is None else str(v) for v in values)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class RouterStore:
    """The router's PostgreSQL access."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def load(self, *, leader_trade_id: str, leader: str, asset_id: str, market: str,
                   wallets: Sequence[str], fills_since_ms: int | None,
                   funding_wallets: Sequence[str]) -> PgView:
        """Everything for one trade in one statement (fills only when ``fills_since_ms`` is given)."""
        params = {"lt": leader_trade_id, "leader": leader, "asset": asset_id, "market": market,
                  "wallets": _join(wallets), "funding": _join(funding_wallets), "sep": SEP,
                  "want_fills": fills_since_ms is not None, "since": _ts(fills_since_ms or 0)}
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LOAD, params)
            row = await cur.fetchone()
        assert row is not None
        existing = ExistingRouted(bytes(row["payload"]), row["appended_cursor"]) if row["routed"] else None
        leader_before = Decimal(row["leader_size"]) if row["leader_size"] is not None else None
        positions = {}
        for w, total, here, size, markets in orjson.loads(row["positions"] or "[]"):
            positions[w] = PositionAgg(Decimal(total), Decimal(here), Decimal(size),
                                       frozenset(markets.split(",")) if markets else frozenset())
        fills: dict[str, dict[str, list[FillRow]]] = defaultdict(lambda: defaultdict(list))
        for w, asset, side, size, notional, t in orjson.loads(row["fills"] or "[]"):
            fills[w][asset].append(FillRow(Side(side), Decimal(size), Decimal(notional), int(t)))
        funding = {w: Decimal(balance) for w, balance in orjson.loads(row["funding"] or "[]")}
        return PgView(existing, positions, {w: dict(a) for w, a in fills.items()}, funding, leader_before)

    async def persist(self, row: RoutedRow) -> bool:
        """Write the decision (trade row, orders, skips, skip stats, leader position) in one statement.

        Returns False when the trade was already persisted (nothing written).
        """
        params = {
            "lt": row.leader_trade_id, "leader": row.leader_wallet, "asset": row.asset_id,
            "cond": row.condition_id, "side": row.side, "payload": row.payload,
            "n_orders": len(row.order_ids), "n_skips": len(row.skip_subs), "delta": row.leader_delta,
            "o_ids": _join(row.order_ids), "o_subs": _join(row.order_subs), "o_wallets": _join(row.order_wallets),
            "o_amounts": _join_num(row.order_amounts), "o_sizes": _join_num(row.order_sizes),
            "o_modes": _join(row.order_modes), "s_subs": _join(row.skip_subs), "s_wallets": _join(row.skip_wallets),
            "s_reasons": _join(row.skip_reasons), "s_details": _join(row.skip_details), "sep": SEP,
            "cursor": row.appended_cursor,
        }
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PERSIST, params)
            result = await cur.fetchone()
        return bool(result and result["inserted"])

    async def existing(self, leader_trade_id: str) -> ExistingRouted | None:
        """The persisted RoutedTrade of a leader trade, if any."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_EXISTING, (leader_trade_id,))
            row = await cur.fetchone()
        return ExistingRouted(bytes(row["payload"]), row["appended_cursor"]) if row else None

    async def mark_appended(self, items: Sequence[tuple[str, str]]) -> None:
        """Record the log cursors of appended RoutedTrades (one statement for many)."""
        if not items:
            return
        async with self.pool.connection() as conn:
            await conn.execute(_MARK, ([lt for lt, _ in items], [c for _, c in items]))

    async def unappended(self, *, older_than_s: float, limit: int) -> list[tuple[str, bytes]]:
        """Persisted RoutedTrades never marked appended (a crash or Redis failure after persisting)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_UNAPPENDED, (older_than_s, limit))
            return [(r["leader_trade_id"], bytes(r["payload"])) for r in await cur.fetchall()]
