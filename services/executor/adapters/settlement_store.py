"""PostgreSQL of settlement: a resolved market's open positions end in one transaction.

A market's positions are those of its tokens (token ids are unique per outcome), whatever condition id a position
was booked with (a manual order's is the trading terminal's; an EXTERNAL one's the venue's): settling stamps the
market's own on it. The positions are locked, settled (``domain.settlement``), each subscription's part of a
position gets a settlement fill (a SELL of its shares at the payout, so every reader folding a subscription's fills
sees its shares leave), the subscriptions' stats move by their own parts (exposure freed, PnL realized), the LIVE
winners' redemptions are recorded (at most one per wallet and market: the key is unique), every position's end
is an audit-log row, and each wallet's realized PnL of the day takes what it realized (``day_pnl``, last). A
position settled before is not open any more: settling again changes nothing.

A position whose wallet has an order of its token in flight (an open ``order_pending`` row) is held back: the
venue may have matched that order before the market resolved, and its fill, learnt later, must be booked on the
position before the position ends (a SELL's proceeds realized and its shares not redeemed; a BUY's shares settled
and redeemed with the rest). The journal books an order's fills in the transaction that ends it, so once the order
is terminal the position holds them, and the settlement sweep (:meth:`SettlementStore.resolutions_with_open_positions`)
settles what is left. The check cannot miss a fill: positions and orders are read by one statement, from one
snapshot, so a position is settled only if that snapshot has its orders ended, and with them their fills booked (a
position a booking changed since is locked on its new version, checked against that snapshot's orders: held back).
An order of such a position resting at the venue (:meth:`SettlementStore.resting_orders`) is cancelled by the
settler, so that it ends even when the venue did not cancel it with its market.

So is a position with a SELL that ended LOST and may have sold (``common.lost_sells.awaited``; at most its 15-minute
window): its fill is never booked, and settled from the shares booked the position realized a payout for shares sold
and asked to redeem them. Reconciliation compares its token for it although the market resolved (it leaves resolved
tokens to settlement otherwise), and a sweep settles what the venue's count left (the sweep leaves such a position
out until then: its market is taken once a position of it is no longer held back). Once the wallet's redemption of
the market is recorded, its count may lack what that redemption took: the position is not held back any more.

Both sweeps go from the open positions to ``resolved_assets`` (each token of every recorded resolution, kept by a
trigger on ``market_resolutions``): their cost follows the open positions, not the resolutions ever recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from common.decimals import ZERO, fmt
from common.ids import hash_id
from common.lease import FencedWrites
from common.lost_sells import awaited, market_of, uncounted
from services.executor.adapters.day_pnl import book_day_pnl
from services.executor.domain import subscription_shares as shares
from services.executor.domain.settlement import HeldPosition, RedemptionPlan, Resolution, Settled, settle

ENGINE_CALLER = "executor"

# A wallet's order of the token not ended yet (index order_pending_open): its fills may still come.
_IN_FLIGHT = """EXISTS (SELECT 1 FROM order_pending o WHERE o.follower_wallet_id = p.follower_wallet_id
                     AND o.asset_id = p.asset_id AND o.terminal_at IS NULL)"""

# A SELL of the token that ended LOST and may have sold, its position not compared yet with a count taken after it.
_AWAITED = awaited("p", market_of("p"))

# The market's open positions (index positions_open_asset), but those with an order in flight or a LOST SELL awaited;
# ``uncounted``: one settled with a LOST SELL no count showed (its window passed, or its market's redemption recorded).
_LOAD = f"""
SELECT p.id, p.follower_wallet_id, p.wallet, p.asset_id, p.venue, p.subscription_id, p.size, p.cost_usd,
       p.condition_id, p.subscription_shares::text AS shares, {uncounted("p")} AS uncounted
FROM positions p
WHERE p.state = 'OPEN' AND p.size > 0 AND p.asset_id = ANY(%(assets)s) AND NOT {_IN_FLIGHT} AND NOT {_AWAITED}
ORDER BY p.follower_wallet_id, p.asset_id
FOR UPDATE OF p
"""

# Those held back (not locked: the sweep settles them once their orders ended or their count was read).
_HELD = f"""
SELECT p.follower_wallet_id, p.asset_id FROM positions p
WHERE p.state = 'OPEN' AND p.size > 0 AND p.asset_id = ANY(%(assets)s) AND ({_IN_FLIGHT} OR {_AWAITED})
ORDER BY p.follower_wallet_id, p.asset_id
"""

# The open positions of a resolved market's token: the tokens of the open positions (index positions_open_asset),
# each looked up in resolved_assets (migration 0740: every token of every resolution recorded) by its key, then the
# open positions of a resolved one (positions_open_asset again). LIMIT 1 and OFFSET 0 keep each a probe per row: a
# join could be planned as a pass over the lookup or the open positions. With what a LOST SELL's check reads of it.
_RESOLVED_OPEN = """
SELECT p.follower_wallet_id, p.asset_id, p.condition_id, p.id, p.opened_at, p.reconciled_at
FROM (SELECT DISTINCT t.asset_id FROM positions t WHERE t.state = 'OPEN') t
CROSS JOIN LATERAL (SELECT ra.condition_id FROM resolved_assets ra WHERE ra.asset_id = t.asset_id LIMIT 1) ra
CROSS JOIN LATERAL (SELECT p.follower_wallet_id, p.asset_id, ra.condition_id, p.id, p.opened_at, p.reconciled_at
                     FROM positions p WHERE p.asset_id = t.asset_id AND p.state = 'OPEN' AND p.size > 0 OFFSET 0) p
"""

# Recorded resolutions with a position to settle now: open, of one of the market's tokens, no order in flight and no
# LOST SELL awaited (as settling would hold it back: each round took such a market again until its hold ended, ran
# its settlement to find it waiting, and up to a batch of them kept the markets resolved after them waiting). Those
# positions first, then for each its wallet's open orders of the token (one probe of order_pending_open) and its
# recent LOST SELLs (one probe of lost_sells_position), then each market's resolution by its key; those resolved first
# first.
_UNSETTLED = f"""
WITH held AS MATERIALIZED ({_RESOLVED_OPEN}),
due AS (SELECT DISTINCT p.condition_id FROM held p WHERE NOT {_IN_FLIGHT} AND NOT {awaited("p", "p.condition_id")})
SELECT r.condition_id, r.asset_ids, r.winning_asset_id, r.neg_risk FROM due d
CROSS JOIN LATERAL (SELECT r.condition_id, r.asset_ids, r.winning_asset_id, r.neg_risk, r.received_at
                     FROM market_resolutions r
                     WHERE r.condition_id = d.condition_id LIMIT 1) r
ORDER BY r.received_at, r.condition_id
LIMIT %s
"""

# Orders resting at the venue (placed: a venue order id, not ended) that hold back an open position of a resolved
# market's token: a resting order the venue did not cancel with its market would hold its position back for ever,
# so the settler asks the venue to cancel it. The positions first, as the sweep finds them, then their wallets' open
# orders of the token (order_pending holds open and unreleased orders only; OFFSET 0 keeps it a probe per position,
# never a pass over every open order), each order read by its key (LIMIT 1: never a pass over `orders`, millions of
# rows). Orders of a venue the settler has no client for are left out. Those the settler asked already (``asked``)
# come apart, all of them (those that still rest: the settler forgets the others), and the batch is of the others: a
# batch that held the orders asked already (a cancel refused leaves its order resting) was the same at every sweep
# once it was full of them, and no later resting order was ever asked.
_RESTING = f"""
WITH held AS MATERIALIZED ({_RESOLVED_OPEN}),
resting AS MATERIALIZED (
  SELECT o.client_order_id, o.venue, o.venue_order_id, o.follower_wallet_id, o.asset_id, h.condition_id,
         o.client_order_id = ANY(%(asked)s::text[]) AS asked
  FROM held h
  CROSS JOIN LATERAL (SELECT op.client_order_id FROM order_pending op
                       WHERE op.follower_wallet_id = h.follower_wallet_id AND op.asset_id = h.asset_id
                         AND op.terminal_at IS NULL OFFSET 0) op
  CROSS JOIN LATERAL (SELECT o.client_order_id, o.venue, o.venue_order_id, o.follower_wallet_id, o.asset_id,
                             o.state
                        FROM orders o WHERE o.client_order_id = op.client_order_id LIMIT 1) o
  WHERE o.state IN ('PLACED', 'PARTIALLY_FILLED') AND o.venue_order_id <> '' AND o.venue = ANY(%(venues)s::text[])
)
(SELECT * FROM resting WHERE NOT asked ORDER BY client_order_id LIMIT %(limit)s)
UNION ALL
(SELECT * FROM resting WHERE asked)
"""

_UPDATE = """
UPDATE positions p SET state = r.state, resolved_shares = r.shares, resolved_cost_usd = p.cost_usd,
    payout_per_share = r.per_share,
    winning_asset_id = %(winner)s, resolved_at = now(), size = 0, cost_usd = 0, subscription_shares = NULL,
    realized_pnl_usd = p.realized_pnl_usd + r.pnl,
    pnl_day_realized_usd = CASE WHEN p.pnl_day = (now() AT TIME ZONE 'UTC')::date THEN p.pnl_day_realized_usd
                                ELSE 0 END + r.pnl,
    pnl_day = (now() AT TIME ZONE 'UTC')::date, closed_at = now(), updated_at = now(), condition_id = %(c)s
FROM json_to_recordset(%(rows)s::json) AS r(w text, a text, state text, shares numeric, per_share numeric,
     pnl numeric)
WHERE p.follower_wallet_id = r.w AND p.asset_id = r.a AND p.state = 'OPEN'
"""

_FILLS = """
INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, outcome, side, size,
                   price, notional_usd, venue, fill_time, fee_shares)
SELECT r.id, r.sub, r.w, r.oid, r.a, %(c)s, p.outcome, 'SELL', r.shares, r.per_share, r.payout, p.venue, now(), 0
FROM json_to_recordset(%(rows)s::json) AS r(id text, sub text, w text, oid text, a text, shares numeric,
     per_share numeric, payout numeric)
JOIN positions p ON p.follower_wallet_id = r.w AND p.asset_id = r.a
WHERE r.shares > 0
ON CONFLICT (id) DO NOTHING
"""

# The rows are locked in subscription order first (``l``; an UPDATE ... FROM takes them in its plan's order), as
# every writer of several stats rows takes them (fill_store._UPSERT_STATS).
_STATS = """
WITH r AS MATERIALIZED (SELECT * FROM json_to_recordset(%s::json) AS r(sub text, cost numeric, pnl numeric)),
l AS MATERIALIZED (SELECT s.subscription_id FROM subscription_stats s WHERE s.subscription_id IN (SELECT sub FROM r)
                   ORDER BY s.subscription_id FOR NO KEY UPDATE)
UPDATE subscription_stats s SET exposure_usd = GREATEST(0, s.exposure_usd - r.cost),
    realized_pnl_usd = s.realized_pnl_usd + r.pnl, updated_at = now(), fills_version = s.fills_version + 1
FROM r JOIN l ON l.subscription_id = r.sub
WHERE s.subscription_id = r.sub
"""

# A late winner's plan (settled by a sweep) joins the wallet's redemption of the market while it was never sent: its
# first round, PENDING, no POST recorded (each is recorded before it leaves); the shares add up, and so do the
# neg-risk amounts, outcome by outcome. Once sent, a redemption is replayed as it was sent: the rest is a leftover
# round's. Rows are taken in key order (the upsert locks an existing one), as the redeemer locks what it changes.
_REDEMPTIONS = """
INSERT INTO redemptions AS d (follower_wallet_id, condition_id, wallet, redemption_key, state, neg_risk, amounts,
    shares)
SELECT r.w, %(c)s, r.proxy, r.key, 'PENDING', r.neg, ARRAY(SELECT json_array_elements_text(r.amounts)), r.shares
FROM json_to_recordset(%(rows)s::json) AS r(w text, proxy text, key text, neg boolean, amounts json, shares numeric)
ORDER BY r.w
ON CONFLICT (follower_wallet_id, condition_id) DO UPDATE SET shares = d.shares + EXCLUDED.shares, updated_at = now(),
    amounts = ARRAY(SELECT (coalesce(a.was::numeric, 0) + coalesce(a.more::numeric, 0))::text
                    FROM unnest(d.amounts, EXCLUDED.amounts) WITH ORDINALITY AS a(was, more, i) ORDER BY a.i)
WHERE d.state = 'PENDING' AND d.attempts = 0 AND d.round = 0 AND d.redemption_key = EXCLUDED.redemption_key
RETURNING redemption_key
"""

AUDIT = """
INSERT INTO audit_log (at, token_id, method, entity_type, entity_id, before, after)
SELECT now(), %s, %s, r.type, r.id, r.before, r.after
FROM json_to_recordset(%s::json) AS r(type text, id text, before jsonb, after jsonb)
"""


@dataclass(frozen=True, slots=True)
class SettlementResult:
    """What one settlement did."""

    settled: list[Settled]
    new_redemptions: list[str]  # keys of redemptions recorded now
    held: list[tuple[str, str]] = field(default_factory=list)  # (wallet id, asset) left open: an order in flight
    # (wallet id, asset, position id) settled on the shares booked with a LOST SELL no count of the venue showed
    uncounted: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Resting:
    """Orders resting at the venue that hold back a position of a resolved market: those not asked to cancel yet
    (a batch, by client order id) and those asked already that still rest (all)."""

    new: list[RestingOrder]
    asked: list[RestingOrder]


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """An order resting at the venue that holds back a position of a resolved market."""

    client_order_id: str
    venue: str
    venue_order_id: str
    follower_wallet_id: str
    asset_id: str
    condition_id: str  # the resolved market's


def _held(row: dict[str, Any]) -> HeldPosition:
    return HeldPosition(row["follower_wallet_id"], row["wallet"], row["asset_id"], row["venue"],
                        row["subscription_id"], row["size"], row["cost_usd"],
                        shares.decode(orjson.loads(row["shares"])) if row["shares"] else None)


def _dumps(rows: Sequence[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


class SettlementStore:
    """Settles resolved markets in PostgreSQL (connections of the executor's pool: fenced by its lease)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *,
                 on_write_error: Callable[[BaseException], object] | None = None) -> None:
        self.pool = pool
        self.fenced = FencedWrites(on_write_error)  # told of each failed write (the lease: of the fence's refusal)

    async def settle(self, resolution: Resolution) -> SettlementResult:
        """End every open position of the market's tokens (one transaction), but those whose wallet has an order of
        the token in flight (returned as ``held``: settled by a later sweep); idempotent."""
        with self.fenced:
            return await self._settle(resolution)

    async def _settle(self, resolution: Resolution) -> SettlementResult:
        assets = {"assets": list(resolution.asset_ids)}
        async with self.pool.connection() as conn, conn.transaction():
            rows = list(await (await conn.execute(_LOAD, assets)).fetchall())
            ids = {(r["follower_wallet_id"], r["asset_id"]): r["id"] for r in rows}
            busy = await (await conn.execute(_HELD, assets)).fetchall()  # less any settled above (an order since)
            held = [key for r in busy if (key := (r["follower_wallet_id"], r["asset_id"])) not in ids]
            if not rows:
                return SettlementResult([], [], held)
            settled, plans = settle(resolution, [_held(r) for r in rows])
            args = {"c": resolution.condition_id, "winner": resolution.winning_asset_id}
            await conn.execute(_FILLS, {**args, "rows": _dumps([
                {"id": hash_id("fill", "settle", ids[(s.follower_wallet_id, s.asset_id)], c.subscription_id),
                 "sub": c.subscription_id or None, "w": s.follower_wallet_id,
                 "oid": "settle_" + ids[(s.follower_wallet_id, s.asset_id)][4:], "a": s.asset_id,
                 "shares": str(c.shares), "per_share": str(s.payout_per_share), "payout": str(c.proceeds_usd)}
                for s in settled for c in s.parts])})
            await conn.execute(_UPDATE, {**args, "rows": _dumps([
                {"w": s.follower_wallet_id, "a": s.asset_id, "state": s.state, "shares": str(s.shares),
                 "per_share": str(s.payout_per_share), "pnl": str(s.realized_pnl_usd)} for s in settled])})
            await conn.execute(_STATS, (_dumps(_stats(settled)),))
            new = [r["redemption_key"] for r in await (await conn.execute(_REDEMPTIONS, {
                **args, "rows": _dumps([_plan_row(p) for p in plans])})).fetchall()]
            await conn.execute(AUDIT, (ENGINE_CALLER, "executor.SettleResolution", _dumps([
                {"type": "position", "id": ids[(s.follower_wallet_id, s.asset_id)],
                 "before": {"state": "OPEN", "shares": fmt(s.shares), "costUsd": fmt(s.cost_usd)},
                 "after": {"state": s.state, "payoutPerShare": fmt(s.payout_per_share),
                           "realizedPnlUsd": fmt(s.realized_pnl_usd), "winningAssetId": resolution.winning_asset_id}}
                for s in settled])))
            async with conn.cursor() as cur:
                await book_day_pnl(cur, _day_steps(settled))
        uncounted = [(r["follower_wallet_id"], r["asset_id"], r["id"]) for r in rows if r["uncounted"]]
        return SettlementResult(settled, new, held, uncounted)

    async def resolutions_with_open_positions(self, limit: int = 100) -> list[Resolution]:
        """Recorded resolutions whose market still has open positions to settle (settled late: a fill booked after
        the resolution, a position held back while an order of its token was in flight, or an event this executor
        never saw). A position whose order is still in flight, or whose LOST SELL is awaited, does not count: it waits
        for the order's end, or the venue's count (at most the LOST SELL's window)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_UNSETTLED, (limit,))
            return [Resolution(r["condition_id"], tuple(r["asset_ids"]), r["winning_asset_id"], r["neg_risk"])
                    for r in await cur.fetchall()]


    async def resting_orders(self, venues: Collection[str], asked: Collection[str] = (),
                             limit: int = 100) -> Resting:
        """Orders of ``venues`` resting at the venue (placed, not ended) that hold back an open position of a
        resolved market's token: up to ``limit`` of those not in ``asked``, by client order id, and every one in
        ``asked``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_RESTING, {"venues": list(venues), "asked": list(asked), "limit": limit})
            found = await cur.fetchall()
        new: list[RestingOrder] = []
        again: list[RestingOrder] = []
        for r in found:
            (again if r["asked"] else new).append(RestingOrder(
                r["client_order_id"], r["venue"], r["venue_order_id"], r["follower_wallet_id"], r["asset_id"],
                r["condition_id"]))
        return Resting(new, again)


def _stats(settled: Sequence[Settled]) -> list[dict[str, Any]]:
    """Each subscription's exposure freed and PnL realized, by its own parts."""
    by_sub: dict[str, list[Decimal]] = {}
    for s in settled:
        for c in s.parts:
            if c.subscription_id:
                acc = by_sub.setdefault(c.subscription_id, [ZERO, ZERO])
                acc[0] -= c.exposure_delta_usd
                acc[1] += c.realized_pnl_usd
    return [{"sub": sub, "cost": str(cost), "pnl": str(pnl)} for sub, (cost, pnl) in by_sub.items()]


def _day_steps(settled: Sequence[Settled]) -> list[tuple[str, Decimal]]:
    """Each wallet's PnL realized by the settlement, as one step: its positions of the market end at once."""
    by_wallet: dict[str, Decimal] = {}
    for s in settled:
        by_wallet[s.follower_wallet_id] = by_wallet.get(s.follower_wallet_id, ZERO) + s.realized_pnl_usd
    return list(by_wallet.items())


def _plan_row(p: RedemptionPlan) -> dict[str, Any]:
    return {"w": p.follower_wallet_id, "proxy": p.wallet, "key": p.key, "neg": p.neg_risk,
            "amounts": [fmt(a) for a in p.amounts], "shares": str(p.shares)}
