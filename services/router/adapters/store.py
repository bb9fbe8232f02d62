"""PostgreSQL: everything one leader trade needs in one statement, and the routing decision
persisted in one statement right after the RoutedTrade is appended (with its log cursor).

Reads (batched per table for all followers at once): the trade's routed row (recovery), positions
aggregated per wallet, each wallet's realized PnL of the day for the daily loss limit, funded balances,
the leader's recorded net position in the asset and the shares already sold by the in-flight SELLs the
Redis read just listed (their fills are booked with the position they reduce, in one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from common.decimals import MIN_HELD_SHARES
from common.storage import compact_sql
from services.router.domain.model import ZERO


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
    realized_today: dict[str, Decimal] = field(default_factory=dict)  # wallet -> realized PnL of the day
    funding: dict[str, Decimal] = field(default_factory=dict)
    leader_before: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PgBatch:
    """What PostgreSQL knows for a batch of leader trades (positions at cost per wallet; market costs
    and asset sizes for the batch's markets and assets)."""

    existing: dict[str, ExistingRouted] = field(default_factory=dict)  # by leader trade id
    totals: dict[str, tuple[Decimal, frozenset[str]]] = field(default_factory=dict)  # wallet -> (cost, markets)
    market_costs: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (wallet, market)
    asset_sizes: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (wallet, asset)
    realized_today: dict[str, Decimal] = field(default_factory=dict)  # wallet -> realized PnL of the day
    funding: dict[str, Decimal] = field(default_factory=dict)
    leaders: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (leader, asset) -> recorded size
    sold: dict[str, Decimal] = field(default_factory=dict)  # SELL client order id -> shares its fills booked

    def position(self, wallet: str, market: str, asset: str) -> PositionAgg:
        """A wallet's open positions aggregated for one trade's market and asset."""
        total = self.totals.get(wallet)
        if total is None:
            return _NO_POSITION
        return PositionAgg(total[0], self.market_costs.get((wallet, market), ZERO),
                           self.asset_sizes.get((wallet, asset), ZERO), total[1])


_NO_POSITION = PositionAgg()


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
    order_fractions: list[Decimal | None] = field(default_factory=list)
    skip_subs: list[str] = field(default_factory=list)
    skip_wallets: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    skip_details: list[str] = field(default_factory=list)
    appended_cursor: str | None = None  # the log cursor when the RoutedTrade was appended before persisting


# Settings of the router's connections. Every table its statements read is reached by key, so one
# generic plan per statement holds however the tables grow, planned without sequential scans (a table
# the statistics saw tiny would otherwise be scanned once per key); PostgreSQL's default would plan the
# batch read afresh on every call (its custom plans look cheaper), ~0.4 ms each time.
PLANNER_OPTIONS = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off"

_EXISTING = "SELECT payload, appended_cursor FROM routed_trades WHERE leader_trade_id = %s"

# Everything a batch of leader trades needs, in ONE statement (one round trip, no pipeline bookkeeping).
# Lists arrive as one SEP-joined string split server-side (string_to_array); per-wallet rows come back
# as compact JSON text with decimals as strings (parsed with orjson, then Decimal).
# Every table is reached by key, one LATERAL lookup per input value (OFFSET 0 keeps PostgreSQL from
# flattening it into a join): a plan the connection caches while a table is still small (a fresh
# database) would otherwise hash-join it, reading the whole table on every call as it grows.
_LOAD = """
WITH w AS (SELECT DISTINCT unnest(string_to_array(%(wallets)s, %(sep)s)) AS id),
p AS (
    SELECT w.id AS w, coalesce(nullif(x.condition_id, ''), x.asset_id) AS m, x.asset_id AS a, x.cost_usd, x.size,
           x.pnl_day, x.pnl_day_realized_usd
    FROM w CROSS JOIN LATERAL (SELECT * FROM positions x WHERE x.follower_wallet_id = w.id OFFSET 0) x
),
held AS (SELECT * FROM p WHERE size >= %(min_held)s),
pos AS (
    SELECT w, coalesce(sum(cost_usd), 0) AS total_cost, string_agg(DISTINCT m, ',') AS markets FROM held GROUP BY w
),
pm AS (
    SELECT h.w, h.m, coalesce(sum(h.cost_usd), 0) AS cost
    FROM held h JOIN (SELECT DISTINCT unnest(string_to_array(%(markets)s, %(sep)s)) AS m) k ON k.m = h.m
    GROUP BY h.w, h.m
),
pa AS (
    SELECT h.w, h.a, coalesce(sum(h.size), 0) AS size
    FROM held h JOIN (SELECT DISTINCT unnest(string_to_array(%(assets)s, %(sep)s)) AS a) k ON k.a = h.a
    GROUP BY h.w, h.a
),
ex AS (
    SELECT r.leader_trade_id, r.payload, r.appended_cursor
    FROM unnest(string_to_array(%(lts)s, %(sep)s)) AS q(lt)
    CROSS JOIN LATERAL (SELECT * FROM routed_trades x WHERE x.leader_trade_id = q.lt OFFSET 0) r
)
SELECT (SELECT array_agg(leader_trade_id) FROM ex) AS ex_ids, (SELECT array_agg(payload) FROM ex) AS ex_payloads,
    (SELECT array_agg(appended_cursor) FROM ex) AS ex_cursors,
    (SELECT json_agg(json_build_array(l.leader_wallet, l.asset_id, l.size::text))::text
        FROM unnest(string_to_array(%(lp_leaders)s, %(sep)s), string_to_array(%(lp_assets)s, %(sep)s)) AS q(l, a)
        CROSS JOIN LATERAL (SELECT * FROM leader_positions x
                            WHERE x.leader_wallet = q.l AND x.asset_id = q.a OFFSET 0) l) AS leaders,
    (SELECT json_agg(json_build_array(w, total_cost::text, markets))::text FROM pos) AS positions,
    (SELECT json_agg(json_build_array(w, m, cost::text))::text FROM pm) AS market_costs,
    (SELECT json_agg(json_build_array(w, a, size::text))::text FROM pa) AS asset_sizes,
    (SELECT json_agg(json_build_array(d.w, d.realized::text))::text FROM (
        SELECT w, sum(pnl_day_realized_usd) AS realized FROM p
        WHERE %(want_pnl)s AND pnl_day = %(day)s GROUP BY w) AS d) AS realized,
    (SELECT json_agg(json_build_array(g.follower_wallet_id, g.balance_usd::text))::text
        FROM unnest(string_to_array(%(funding)s, %(sep)s)) AS f(id)
        CROSS JOIN LATERAL (SELECT * FROM funding x WHERE x.follower_wallet_id = f.id OFFSET 0) g) AS funding,
    (SELECT json_agg(json_build_array(q.id, f.sold::text))::text
        FROM unnest(string_to_array(%(sell_orders)s, %(sep)s)) AS q(id)
        CROSS JOIN LATERAL (SELECT sum(x.size) AS sold FROM fills x
                            WHERE x.order_id = q.id AND x.side = 'SELL' OFFSET 0) f
        WHERE f.sold IS NOT NULL) AS sold
"""

# One statement, one implicit transaction, for a batch of decisions: a trade's orders, skips and leader
# position change are written only when its trade row is new (the row gates everything). The leader's
# position is floored at 0 after each trade; for several trades of one (leader, asset) that is
# max(before + S_n, S_n - min_k S_k) over the prefix sums S_k of the new trades' changes, in batch order.
# The payloads travel as one bytea cut server-side (psycopg's text dump of a bytea[] escapes every byte
# in Python: ~6 ms for a 1,000-follower RoutedTrade). A leader with no row yet gets one only by buying:
# sells of a position never seen bought leave it unknown. The text is compacted
# so that psycopg caches its parsing.
_PERSIST = compact_sql("""
WITH inp AS (
    SELECT * FROM unnest(string_to_array(%(lts)s, %(sep)s), string_to_array(%(leaders)s, %(sep)s),
                         string_to_array(%(assets)s, %(sep)s), string_to_array(%(conds)s, %(sep)s),
                         string_to_array(%(sides)s, %(sep)s), string_to_array(%(n_orders)s, %(sep)s)::int[],
                         string_to_array(%(n_skips)s, %(sep)s)::int[],
                         string_to_array(%(p_starts)s, %(sep)s)::int[], string_to_array(%(p_lens)s, %(sep)s)::int[],
                         string_to_array(%(cursors)s, %(sep)s, 'N'),
                         string_to_array(%(deltas)s, %(sep)s, 'N')::numeric[])
        WITH ORDINALITY AS u(lt, leader, asset, cond, side, n_orders, n_skips, p_start, p_len, cursor, delta, seq)
), t AS (
    INSERT INTO routed_trades (leader_trade_id, leader_wallet, asset_id, side, orders, skips, payload,
                               appended_cursor, appended_at)
    SELECT lt, leader, asset, side, n_orders, n_skips, substring(%(payloads)s::bytea FROM p_start FOR p_len), cursor,
           CASE WHEN cursor IS NULL THEN NULL ELSE now() END
    FROM inp ORDER BY seq
    ON CONFLICT (leader_trade_id) DO NOTHING
    RETURNING leader_trade_id
), o AS (
    INSERT INTO routed_orders (client_order_id, leader_trade_id, subscription_id, follower_wallet_id,
                               asset_id, condition_id, side, amount_usd, size, sell_fraction, mode)
    SELECT u.coid, u.lt, u.sub, u.wallet, i.asset, i.cond, i.side, u.amount, u.size, u.fraction, u.mode
    FROM unnest(string_to_array(%(o_lts)s, %(sep)s), string_to_array(%(o_ids)s, %(sep)s),
                string_to_array(%(o_subs)s, %(sep)s), string_to_array(%(o_wallets)s, %(sep)s),
                string_to_array(%(o_amounts)s, %(sep)s, 'N')::numeric[],
                string_to_array(%(o_sizes)s, %(sep)s, 'N')::numeric[],
                string_to_array(%(o_fractions)s, %(sep)s, 'N')::numeric[], string_to_array(%(o_modes)s, %(sep)s))
         AS u(lt, coid, sub, wallet, amount, size, fraction, mode)
    JOIN t ON t.leader_trade_id = u.lt JOIN inp i ON i.lt = u.lt
    ON CONFLICT (client_order_id) DO NOTHING
    RETURNING client_order_id
), s AS (
    INSERT INTO copy_skips (subscription_id, leader_trade_id, follower_wallet_id, reason, detail)
    SELECT u.sub, u.lt, u.wallet, u.reason, u.detail
    FROM unnest(string_to_array(%(s_lts)s, %(sep)s), string_to_array(%(s_subs)s, %(sep)s),
                string_to_array(%(s_wallets)s, %(sep)s), string_to_array(%(s_reasons)s, %(sep)s),
                string_to_array(%(s_details)s, %(sep)s))
         AS u(lt, sub, wallet, reason, detail)
    JOIN t ON t.leader_trade_id = u.lt
    ON CONFLICT (leader_trade_id, subscription_id) DO NOTHING
    RETURNING subscription_id
), st AS (
    INSERT INTO subscription_stats (subscription_id, skipped, updated_at)
    SELECT subscription_id, count(*), now() FROM s GROUP BY subscription_id
    ON CONFLICT (subscription_id) DO UPDATE
        SET skipped = subscription_stats.skipped + EXCLUDED.skipped, updated_at = now()
), lpd AS (
    SELECT i.leader, i.asset, i.lt, i.seq, i.delta,
           sum(i.delta) OVER (PARTITION BY i.leader, i.asset ORDER BY i.seq) AS sk
    FROM inp i JOIN t ON t.leader_trade_id = i.lt
    WHERE i.delta IS NOT NULL
), lpa AS (
    SELECT leader, asset, sum(delta) AS s, sum(delta) - min(sk) AS m, (array_agg(lt ORDER BY seq DESC))[1] AS last,
           bool_or(delta > 0) AS bought
    FROM lpd GROUP BY leader, asset
), lp AS (
    INSERT INTO leader_positions (leader_wallet, asset_id, size, last_trade_id)
    SELECT leader, asset, greatest(m, s), last FROM lpa a
    WHERE a.bought
       OR EXISTS (SELECT 1 FROM leader_positions x WHERE x.leader_wallet = a.leader AND x.asset_id = a.asset)
    ON CONFLICT (leader_wallet, asset_id) DO UPDATE
        SET size = (SELECT greatest(a.m, leader_positions.size + a.s) FROM lpa a
                    WHERE a.leader = EXCLUDED.leader_wallet AND a.asset = EXCLUDED.asset_id),
            last_trade_id = EXCLUDED.last_trade_id, updated_at = now()
)
SELECT (SELECT array_agg(leader_trade_id) FROM t) AS inserted, (SELECT count(*) FROM o) AS orders_inserted
""")
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


def _starts(lengths: Sequence[int]) -> list[int]:
    """1-based offsets of consecutive parts of the given lengths (SQL ``substring`` positions)."""
    out, at = [], 1
    for n in lengths:
        out.append(at)
        at += n
    return out


def _day(ms: int) -> date:
    """The UTC date of ``ms`` (epoch milliseconds)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


class RouterStore:
    """The router's PostgreSQL access."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self._hot: AsyncConnection[Any] | None = None

    async def _hot_one(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """One statement of the routing path on a connection kept out of the pool (taking and returning a
        pooled connection costs ~50 µs of CPU per statement); a failed connection goes back to the pool,
        which checks it, and the next statement takes another."""
        conn = self._hot
        if conn is None or conn.closed:
            conn = self._hot = await self.pool.getconn()
        try:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(sql, params, prepare=True)
            return await cur.fetchone()
        except BaseException:
            if self._hot is conn:
                self._hot = None
                await self.pool.putconn(conn)
            raise

    async def close(self) -> None:
        """Give the routing path's connection back to the pool (before the pool closes)."""
        conn, self._hot = self._hot, None
        if conn is not None:
            await self.pool.putconn(conn)

    async def load_batch(self, *, leader_trade_ids: Sequence[str], wallets: Sequence[str],
                         markets: Sequence[str], assets: Sequence[str], leader_assets: Sequence[tuple[str, str]],
                         pnl_day_ms: int | None, funding_wallets: Sequence[str],
                         sell_orders: Sequence[str] = ()) -> PgBatch:
        """Everything for a batch of trades in one statement (the realized PnL of the UTC day that starts
        at ``pnl_day_ms`` only when it is given; the shares booked by the fills of the SELLs ``sell_orders``,
        client order ids, each one's only when it has some)."""
        params = {"lts": _join(leader_trade_ids), "wallets": _join(wallets), "markets": _join(markets),
                  "assets": _join(assets), "lp_leaders": _join([lw for lw, _ in leader_assets]),
                  "lp_assets": _join([a for _, a in leader_assets]), "funding": _join(funding_wallets),
                  "sep": SEP, "want_pnl": pnl_day_ms is not None, "day": _day(pnl_day_ms or 0),
                  "min_held": MIN_HELD_SHARES, "sell_orders": _join(sell_orders)}
        row = await self._hot_one(_LOAD, params)
        assert row is not None
        (ex_ids, ex_payloads, ex_cursors, leaders_, positions, market_costs_, asset_sizes_, realized_, funding_,
         sold_) = row
        existing = {lt: ExistingRouted(bytes(payload), cursor) for lt, payload, cursor
                    in zip(ex_ids or (), ex_payloads or (), ex_cursors or (), strict=True)}
        totals = {w: (Decimal(total), frozenset(markets_.split(",")) if markets_ else frozenset())
                  for w, total, markets_ in orjson.loads(positions or "[]")}
        market_costs = {(w, m): Decimal(c) for w, m, c in orjson.loads(market_costs_ or "[]")}
        asset_sizes = {(w, a): Decimal(z) for w, a, z in orjson.loads(asset_sizes_ or "[]")}
        realized = {w: Decimal(pnl) for w, pnl in orjson.loads(realized_ or "[]")}
        funding = {w: Decimal(balance) for w, balance in orjson.loads(funding_ or "[]")}
        leaders = {(lw, a): Decimal(z) for lw, a, z in orjson.loads(leaders_ or "[]")}
        sold = {coid: Decimal(z) for coid, z in orjson.loads(sold_ or "[]")}
        return PgBatch(existing, totals, market_costs, asset_sizes, realized, funding,
                       leaders, sold)

    async def load(self, *, leader_trade_id: str, leader: str, asset_id: str, market: str,
                   wallets: Sequence[str], pnl_day_ms: int | None,
                   funding_wallets: Sequence[str]) -> PgView:
        """Everything for one trade (see :meth:`load_batch`)."""
        b = await self.load_batch(leader_trade_ids=[leader_trade_id], wallets=wallets, markets=[market],
                                  assets=[asset_id], leader_assets=[(leader, asset_id)],
                                  pnl_day_ms=pnl_day_ms, funding_wallets=funding_wallets)
        positions = {w: b.position(w, market, asset_id) for w in wallets if w in b.totals}
        return PgView(b.existing.get(leader_trade_id), positions, b.realized_today, b.funding,
                      b.leaders.get((leader, asset_id)))

    async def persist_many(self, rows: Sequence[RoutedRow]) -> set[str]:
        """Write a batch of decisions (trade rows, orders, skips, skip stats, leader positions) in one
        statement, in order. Returns the leader trade ids written now (one persisted before: nothing)."""
        if not rows:
            return set()
        # each order's / skip's leader trade id: the row's id repeated (joined without a call per element)
        o_lts = SEP.join(SEP.join([_join([r.leader_trade_id])] * len(r.order_ids)) for r in rows if r.order_ids)
        s_lts = SEP.join(SEP.join([_join([r.leader_trade_id])] * len(r.skip_subs)) for r in rows if r.skip_subs)

        def cat(name: str) -> list[Any]:
            out: list[Any] = []
            for r in rows:
                out += getattr(r, name)
            return out

        params = {
            "lts": _join([r.leader_trade_id for r in rows]), "leaders": _join([r.leader_wallet for r in rows]),
            "assets": _join([r.asset_id for r in rows]), "conds": _join([r.condition_id for r in rows]),
            "sides": _join([r.side for r in rows]), "n_orders": SEP.join(str(len(r.order_ids)) for r in rows),
            "n_skips": SEP.join(str(len(r.skip_subs)) for r in rows), "payloads": b"".join(r.payload for r in rows),
            "p_starts": SEP.join(str(x) for x in _starts([len(r.payload) for r in rows])),
            "p_lens": SEP.join(str(len(r.payload)) for r in rows),
            "cursors": SEP.join("N" if r.appended_cursor is None else r.appended_cursor for r in rows),
            "deltas": _join_num([r.leader_delta for r in rows]),
            "o_lts": o_lts, "o_ids": _join(cat("order_ids")), "o_subs": _join(cat("order_subs")),
            "o_wallets": _join(cat("order_wallets")), "o_amounts": _join_num(cat("order_amounts")),
            "o_sizes": _join_num(cat("order_sizes")), "o_fractions": _join_num(cat("order_fractions")),
            "o_modes": _join(cat("order_modes")),
            "s_lts": s_lts, "s_subs": _join(cat("skip_subs")), "s_wallets": _join(cat("skip_wallets")),
            "s_reasons": _join(cat("skip_reasons")), "s_details": _join(cat("skip_details")), "sep": SEP,
        }
        result = await self._hot_one(_PERSIST, params)
        return set(result[0] or ()) if result else set()

    async def persist(self, row: RoutedRow) -> bool:
        """Write one decision (see :meth:`persist_many`); False when the trade was already persisted."""
        return row.leader_trade_id in await self.persist_many([row])

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
