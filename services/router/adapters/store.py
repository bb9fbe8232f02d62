"""PostgreSQL: everything one leader trade needs in one statement, and the routing decision
persisted in one statement right after the RoutedTrade is appended (with its log cursor).

Reads (batched per table for all followers at once): the trade's routed row (recovery), positions
aggregated per wallet (with each subscription's part of the assets its SELLs trade, when a split is kept, the
subscription whose copy opened their positions and when they opened, and what
the wallet's SELLs in flight the router did not send may still sell of them: exits, manual SELLs, copies re-sized by
the executor; they reserve nothing in Redis), what each wallet's BUYs in flight the router did not send (manual BUYs)
may still spend, by market (they reserve nothing in Redis either),
each wallet's realized PnL of the day at its lowest for the daily loss limit, funded balances,
the leader's recorded net position in the asset and the shares already sold by the in-flight SELLs the
Redis read just listed (their fills are booked with the position they reduce, in one transaction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import orjson
from psycopg import AsyncConnection, generators, pq
from psycopg.adapt import Transformer
from psycopg_pool import AsyncConnectionPool

from common.decimals import MIN_HELD_SHARES
from common.storage import checked_result
from services.router.adapters.store_sql import (
    EXISTING,
    LOAD_PREPARED,
    MARK_APPENDED,
    PERSIST_PREPARED,
    SEP,
    UNAPPENDED,
    Prepared,
    join_numbers,
    join_text,
    part_starts,
    utc_day,
)
from services.router.domain.holdings import by_hand, parts_of
from services.router.domain.model import ZERO


@dataclass(frozen=True, slots=True)
class PositionAgg:
    """A wallet's open positions, aggregated for one trade's market and asset."""

    total_cost_usd: Decimal = ZERO
    market_cost_usd: Decimal = ZERO
    asset_size: Decimal = ZERO
    markets: frozenset[str] = frozenset()
    # each subscription's shares of it (None: no split kept of a position a copy opened; bought by hand, none kept:
    # all of no subscription, holdings.by_hand)
    asset_parts: Mapping[str, Decimal] | None = None
    # shares of it the wallet's SELLs in flight that are not the router's copies (guard's exits, manual SELLs) may
    # still sell; read for the assets a SELL of the batch trades only
    asset_exiting: Decimal = ZERO
    # shares of it the copies in flight the router did not send (the executor's re-sized SELLs) may still sell, by
    # subscription (None: none); read as asset_exiting
    asset_unrouted: Mapping[str, Decimal] | None = None
    # USD the wallet's BUYs in flight the router did not send (manual BUYs) may still spend: in all, in the trade's
    # market, and their markets (the router's own copies are counted from Redis)
    buying_total_usd: Decimal = ZERO
    buying_market_usd: Decimal = ZERO
    buying_markets: frozenset[str] = frozenset()
    # the subscription whose copy opened the asset's position (origin COPY); read as asset_parts
    asset_opened_by: str | None = None


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
    realized_today: dict[str, Decimal] = field(default_factory=dict)  # wallet -> the day's realized PnL at its lowest
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
    realized_today: dict[str, Decimal] = field(default_factory=dict)  # wallet -> the day's realized PnL at its lowest
    funding: dict[str, Decimal] = field(default_factory=dict)
    leaders: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (leader, asset) -> recorded size
    sold: dict[str, Decimal] = field(default_factory=dict)  # SELL client order id -> shares its fills booked
    # (wallet, asset) -> each subscription's shares, for a SELL's asset whose position keeps a split that adds up, or
    # was bought by hand (MANUAL) with none kept (all of no subscription: holdings.by_hand)
    parts: dict[tuple[str, str], dict[str, Decimal]] = field(default_factory=dict)
    # (wallet, asset) -> shares its exits and manual SELLs in flight may still sell, for a SELL's asset held (when some)
    exiting: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    # (wallet, asset) -> shares the copies in flight the router did not send may still sell, by subscription (the
    # same assets, when some)
    unrouted: dict[tuple[str, str], dict[str, Decimal]] = field(default_factory=dict)
    # wallet -> its BUYs in flight the router did not send, each (its condition id, "" if none; asset; USD it may
    # still spend)
    buying: dict[str, list[tuple[str, str, Decimal]]] = field(default_factory=dict)
    # (wallet, asset) -> the subscription whose copy opened the position, for a SELL's asset held (when one did)
    openers: dict[tuple[str, str], str] = field(default_factory=dict)
    # (wallet, asset) -> when the position opened (Unix ms), for a SELL's asset held
    opened: dict[tuple[str, str], int] = field(default_factory=dict)

    def position(self, wallet: str, market: str, asset: str) -> PositionAgg:
        """A wallet's open positions aggregated for one trade's market and asset."""
        total = self.totals.get(wallet)
        buys = self.buying.get(wallet) if self.buying else None
        if total is None:
            return _NO_POSITION if buys is None else _with_buys(_NO_POSITION, buys, market, asset)
        key = (wallet, asset)
        pos = PositionAgg(total[0], self.market_costs.get((wallet, market), ZERO), self.asset_sizes.get(key, ZERO),
                          total[1], self.parts.get(key) if self.parts else None,
                          self.exiting.get(key, ZERO) if self.exiting else ZERO,
                          self.unrouted.get(key) if self.unrouted else None,
                          asset_opened_by=self.openers.get(key) if self.openers else None)
        return pos if buys is None else _with_buys(pos, buys, market, asset)


def _with_buys(pos: PositionAgg, buys: list[tuple[str, str, Decimal]], market: str, asset: str) -> PositionAgg:
    """``pos`` with what the BUYs in flight may still spend; one of no condition id is in the market of its asset:
    the trade's for the trade's asset, else its own (as the executor books its position)."""
    total = in_market = ZERO
    markets: set[str] = set()
    for condition, a, usd in buys:
        m = condition or (market if a == asset else a)
        total += usd
        markets.add(m)
        if m == market:
            in_market += usd
    return replace(pos, buying_total_usd=total, buying_market_usd=in_market, buying_markets=frozenset(markets))


def _buying_rows(rows: Sequence[list[Any]]) -> dict[str, list[tuple[str, str, Decimal]]]:
    """LOAD's ``buying`` rows ``[wallet, asset, USD it may still spend, its condition id (lower case, "" if none)]``
    by wallet."""
    out: dict[str, list[tuple[str, str, Decimal]]] = {}
    for w, a, usd, condition in rows:
        out.setdefault(w, []).append((condition or "", a, Decimal(usd)))
    return out


_NO_POSITION = PositionAgg()

WalletRows = tuple[dict[str, tuple[Decimal, frozenset[str]]], dict[tuple[str, str], Decimal],
                   dict[tuple[str, str], Decimal], dict[str, Decimal], dict[tuple[str, str], dict[str, Decimal]],
                   dict[tuple[str, str], Decimal], dict[tuple[str, str], dict[str, Decimal]]]


def _read_wallets(rows: list[list[Any]], unclaimed: Sequence[list[Any]] = (),
                  opened: dict[tuple[str, str], int] | None = None) -> tuple[WalletRows, dict[tuple[str, str], str]]:
    """LOAD's per-wallet rows ``[wallet, cost held, markets held, [[market, cost]...], [[asset, shares (, cost,
    split: for a SELL's asset whose position keeps one)(, its opening copy's subscription: for a SELL's asset a copy
    opened; "" for one bought by hand)]...], realized today]`` and its ``unclaimed`` rows
    ``[wallet, asset, subscription, shares]`` (what the wallet's SELLs in flight the router did not send may still
    sell of a SELL's asset, a copy's under its subscription, the others' under null) as :class:`PgBatch`'s totals,
    market costs, asset sizes, realized PnL, parts (a split that does not add up to its position is left out: the
    position is sized on the wallet's shares, as one with none), exits in flight and copies in flight the router did
    not send, these of the positions held only (those with an asset size). A market listed twice (both of its
    outcomes held) costs the sum of the two. With them, the subscription whose copy opened each such position; one
    bought by hand (opener "") with no split kept is read as the part of no subscription (``holdings.by_hand``): no
    copy SELL is sized on it. A row's ``[[asset, opened at (Unix ms)]...]`` (its SELL assets) go to ``opened``."""
    totals: dict[str, tuple[Decimal, frozenset[str]]] = {}
    market_costs: dict[tuple[str, str], Decimal] = {}
    asset_sizes: dict[tuple[str, str], Decimal] = {}
    realized: dict[str, Decimal] = {}
    parts: dict[tuple[str, str], dict[str, Decimal]] = {}
    exiting: dict[tuple[str, str], Decimal] = {}
    unrouted: dict[tuple[str, str], dict[str, Decimal]] = {}
    openers: dict[tuple[str, str], str] = {}
    for w, total, markets, costs, sizes, pnl, *more in rows:
        if more and more[0] and opened is not None:
            opened.update(((w, a), ms) for a, ms in more[0])
        if total is not None:
            totals[w] = (Decimal(total), frozenset(markets.split(",")) if markets else frozenset())
        for m, cost in costs or ():
            key = (w, m)
            market_costs[key] = market_costs.get(key, ZERO) + Decimal(cost)
        for row in sizes or ():
            key = (w, row[0])
            asset_sizes[key] = held = Decimal(row[1])
            if len(row) == 3:  # a SELL's asset with no split kept: a copy opened it, or none did ("": by hand)
                if row[2]:
                    openers[key] = row[2]
                else:
                    parts[key] = by_hand(held)
            elif len(row) > 3:  # a SELL's asset with a split kept
                split = parts_of(row[3], held, Decimal(row[2]))
                if split is not None:
                    parts[key] = split
                if len(row) > 4 and row[4]:
                    openers[key] = row[4]
        if pnl is not None:
            realized[w] = Decimal(pnl)
    for w, a, sub, n in unclaimed:
        key = (w, a)
        if key not in asset_sizes:  # not held (or less than a share step): nothing to size on
            continue
        if sub is None:
            exiting[key] = Decimal(n)
        else:
            unrouted.setdefault(key, {})[sub] = Decimal(n)
    return (totals, market_costs, asset_sizes, realized, parts, exiting, unrouted), openers


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
    orders: int = 0  # the copy orders in ``payload``
    skip_subs: list[str] = field(default_factory=list)
    skip_wallets: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)
    skip_details: list[str] = field(default_factory=list)
    appended_cursor: str | None = None  # the log cursor when the RoutedTrade was appended before persisting


# Settings of the router's connections. Every table its statements read is reached by key, so one
# generic plan per statement serves, planned without sequential scans (a table the statistics saw tiny
# would otherwise be scanned once per key); PostgreSQL's default would plan the batch read afresh on every
# call (its custom plans look cheaper), ~0.4 ms each time. A cached plan is not made again as a table
# grows, only after its next ANALYZE: made while positions held one row, the batch read looked each wallet
# up through positions_asset_wallet (whose leading column is the asset), every lookup a walk over that whole
# index (a 1,000-follower fan-out read 23,000 pages: 30 ms instead of 7), until autovacuum analyzed the
# table. So the routing connection drops its plans every ``replan_interval_s`` (one planning, ~0.5 ms), and those of a
# connection it takes from the pool (prepared by an earlier user: one planned long ago, or psycopg's own).
class RouterStore:
    """The router's PostgreSQL access."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, replan_interval_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.replan_interval_s = replan_interval_s
        self.clock = clock
        self._hot: AsyncConnection[Any] | None = None
        self._prepared: set[bytes] = set()  # the statements prepared on ``_hot``
        self._tx = Transformer(None)
        self._planned_at: float | None = None  # when the statements on ``_hot`` were dropped

    async def _hot_one(self, stmt: Prepared, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """One statement of the routing path, as a bare prepared statement (prepared once per connection and run
        with ``PQsendQueryPrepared``: psycopg's cursor costs ~100 µs of Python a statement), on a connection kept out
        of the pool (taking and returning a pooled connection costs ~50 µs of CPU per statement); a failed
        connection goes back to the pool, which checks it, and the next statement takes another."""
        conn = self._hot
        if conn is None or conn.closed:
            conn = self._hot = await self.pool.getconn()
            self._tx = Transformer(conn)
            self._planned_at = None  # its statements may be an earlier user's: drop them
        try:
            if self._planned_at is None or (self.replan_interval_s
                                            and self.clock() - self._planned_at >= self.replan_interval_s):
                # psycopg forgets its prepared statements too; prepared itself (psycopg's default after 5 runs, on a
                # connection where it prepared nothing else), it would run once and then be gone
                await conn.execute("DEALLOCATE ALL", prepare=False)
                self._prepared.clear()
                self._planned_at = self.clock()
            values, types, formats = stmt.encode(params)
            async with conn.lock:
                pgconn = conn.pgconn
                if stmt.name not in self._prepared:
                    pgconn.send_prepare(stmt.name, stmt.sql, param_types=types)
                    checked_result(await conn.wait(generators.execute(pgconn)), conn, pq.ExecStatus.COMMAND_OK)
                    self._prepared.add(stmt.name)
                pgconn.send_query_prepared(stmt.name, values, param_formats=formats)
                res = checked_result(await conn.wait(generators.execute(pgconn)), conn, pq.ExecStatus.TUPLES_OK)
            if not res.ntuples:
                return None
            tx = self._tx
            tx.set_pgresult(res)
            return tx.load_row(0, tuple)
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
                         sell_orders: Sequence[str] = (), sell_assets: Sequence[str] | None = None) -> PgBatch:
        """Everything for a batch of trades in one statement (the lowest point the realized PnL of the UTC day
        that starts at ``pnl_day_ms`` went down to, only when it is given; the shares booked by the fills of the
        SELLs ``sell_orders``, client order ids, each one's only when it has some; the split of the positions in
        ``sell_assets``, the assets the batch's SELLs trade (among ``assets``), all of ``assets`` when None, when one
        is kept, when those held opened, and what the wallet's SELLs in flight the router did not send may still sell
        of them: exits, manual SELLs, copies by subscription, read in one set from the rows the executor marked)."""
        params = {"lts": join_text(leader_trade_ids), "wallets": join_text(wallets), "markets": join_text(markets),
                  "assets": join_text(assets), "lp_leaders": join_text([lw for lw, _ in leader_assets]),
                  "lp_assets": join_text([a for _, a in leader_assets]), "funding": join_text(funding_wallets),
                  "sep": SEP, "want_pnl": pnl_day_ms is not None, "day": utc_day(pnl_day_ms or 0),
                  "min_held": MIN_HELD_SHARES, "sell_orders": join_text(sell_orders),
                  "sell_assets": join_text(assets if sell_assets is None else sell_assets)}
        row = await self._hot_one(LOAD_PREPARED, params)
        assert row is not None
        ex_ids, ex_payloads, ex_cursors, leaders_, wallets_, funding_, sold_, unclaimed_, buying_ = row
        existing = {lt: ExistingRouted(bytes(payload), cursor) for lt, payload, cursor
                    in zip(ex_ids or (), ex_payloads or (), ex_cursors or (), strict=True)}
        opened: dict[tuple[str, str], int] = {}  # filled by _read_wallets
        (totals, market_costs, asset_sizes, realized, parts, exiting, unrouted), openers = _read_wallets(
            orjson.loads(wallets_ or "[]"), orjson.loads(unclaimed_) if unclaimed_ else [], opened)
        funding = {w: Decimal(balance) for w, balance in orjson.loads(funding_ or "[]")}
        leaders = {(lw, a): Decimal(z) for lw, a, z in orjson.loads(leaders_ or "[]")}
        sold = {coid: Decimal(z) for coid, z in orjson.loads(sold_ or "[]")}
        return PgBatch(existing, totals, market_costs, asset_sizes, realized, funding, leaders, sold, parts, exiting,
                       unrouted, _buying_rows(orjson.loads(buying_)) if buying_ else {}, openers, opened)

    async def load(self, *, leader_trade_id: str, leader: str, asset_id: str, market: str,
                   wallets: Sequence[str], pnl_day_ms: int | None,
                   funding_wallets: Sequence[str]) -> PgView:
        """Everything for one trade (see :meth:`load_batch`)."""
        b = await self.load_batch(leader_trade_ids=[leader_trade_id], wallets=wallets, markets=[market],
                                  assets=[asset_id], leader_assets=[(leader, asset_id)],
                                  pnl_day_ms=pnl_day_ms, funding_wallets=funding_wallets)
        positions = {w: b.position(w, market, asset_id) for w in wallets if w in b.totals or w in b.buying}
        return PgView(b.existing.get(leader_trade_id), positions, b.realized_today, b.funding,
                      b.leaders.get((leader, asset_id)))

    async def persist_many(self, rows: Sequence[RoutedRow]) -> set[str]:
        """Write a batch of decisions (trade rows with their RoutedTrade, skips, skip stats, leader positions) in one
        statement, in order. Returns the leader trade ids written now (one persisted before: nothing)."""
        if not rows:
            return set()
        # each skip's leader trade id: the row's id repeated (joined without a call per element)
        s_lts = SEP.join(SEP.join([join_text([r.leader_trade_id])] * len(r.skip_subs)) for r in rows if r.skip_subs)

        def cat(name: str) -> list[Any]:
            out: list[Any] = []
            for r in rows:
                out += getattr(r, name)
            return out

        params = {
            "lts": join_text([r.leader_trade_id for r in rows]), "leaders": join_text([r.leader_wallet for r in rows]),
            "assets": join_text([r.asset_id for r in rows]), "conds": join_text([r.condition_id for r in rows]),
            "sides": join_text([r.side for r in rows]), "n_orders": SEP.join(str(r.orders) for r in rows),
            "n_skips": SEP.join(str(len(r.skip_subs)) for r in rows), "payloads": b"".join(r.payload for r in rows),
            "p_starts": SEP.join(str(x) for x in part_starts([len(r.payload) for r in rows])),
            "p_lens": SEP.join(str(len(r.payload)) for r in rows),
            "cursors": SEP.join("N" if r.appended_cursor is None else r.appended_cursor for r in rows),
            "deltas": join_numbers([r.leader_delta for r in rows]),
            "s_lts": s_lts, "s_subs": join_text(cat("skip_subs")), "s_wallets": join_text(cat("skip_wallets")),
            "s_reasons": join_text(cat("skip_reasons")), "s_details": join_text(cat("skip_details")), "sep": SEP,
        }
        result = await self._hot_one(PERSIST_PREPARED, params)
        return set(result[0] or ()) if result else set()

    async def persist(self, row: RoutedRow) -> bool:
        """Write one decision (see :meth:`persist_many`); False when the trade was already persisted."""
        return row.leader_trade_id in await self.persist_many([row])

    async def existing(self, leader_trade_id: str) -> ExistingRouted | None:
        """The persisted RoutedTrade of a leader trade, if any."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(EXISTING, (leader_trade_id,))
            row = await cur.fetchone()
        return ExistingRouted(bytes(row["payload"]), row["appended_cursor"]) if row else None

    async def mark_appended(self, items: Sequence[tuple[str, str]]) -> None:
        """Record the log cursors of appended RoutedTrades (one statement for many)."""
        if not items:
            return
        async with self.pool.connection() as conn:
            await conn.execute(MARK_APPENDED, ([lt for lt, _ in items], [c for _, c in items]))

    async def unappended(self, *, older_than_s: float, limit: int) -> list[tuple[str, bytes]]:
        """Persisted RoutedTrades never marked appended (a crash or Redis failure after persisting)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(UNAPPENDED, (older_than_s, limit))
            return [(r["leader_trade_id"], bytes(r["payload"])) for r in await cur.fetchall()]
