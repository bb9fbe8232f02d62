"""PostgreSQL of reconciliation: LIVE wallets, a wallet's booked positions and busy tokens, and applying the
corrections (each with its audit-log row) in one transaction that re-checks what it corrects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from psycopg_pool import AsyncConnectionPool

from common.decimals import ONE, fmt
from common.ids import new_id
from common.lease import FencedWrites
from common.lost_buys import CLAIMABLE, CREDITED
from common.lost_sells import awaited, lost_of, market_of, unseen
from common.storage import pipelined_transaction
from services.executor.adapters.reconcile_sql import ARCHIVE as _ARCHIVE
from services.executor.adapters.reconcile_sql import OPEN_EXTERNAL as _EXTERNAL
from services.executor.adapters.reconcile_sql import STATS as _STATS
from services.executor.adapters.settlement_store import AUDIT, ENGINE_CALLER
from services.executor.domain import subscription_shares as shares
from services.executor.domain.lost_buys import LostBuy, claims, credited, most_bought
from services.executor.domain.order_intake import market_condition
from services.executor.domain.position_math import MONEY_QUANTUM as PRICE_QUANTUM
from services.executor.domain.pricing import order_taker_fee
from services.executor.domain.reconcile import EXTERNAL, AtVenue, Booked, Correction, CountTime, changed_since_count
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)


_LIVE_WALLETS = (  # the proxy of a LIVE subscription first, then any subscription's, then a well-formed one booked
    "SELECT follower_wallet_id, (array_agg(proxy ORDER BY rank, proxy))[1] AS proxy FROM ("
    " SELECT follower_wallet_id, follower_proxy AS proxy, mode = 'LIVE' AND state <> 'STOPPED' AS follows,"
    "  CASE WHEN mode = 'LIVE' AND state <> 'STOPPED' THEN 0 ELSE 1 END AS rank FROM subscriptions"
    " UNION ALL SELECT follower_wallet_id, wallet, true, CASE WHEN wallet ~ '^0x[0-9a-f]{40}$' THEN 2 ELSE 3 END"
    "  FROM positions WHERE state IN ('OPEN', 'RESOLVED_WON') AND venue = 'INSIDERS') w"
    " GROUP BY follower_wallet_id HAVING bool_or(follows) ORDER BY follower_wallet_id")


@dataclass(frozen=True, slots=True)
class LiveWallet:
    """A follower wallet reconciliation follows (:meth:`ReconcileStore.live_wallets`)."""

    follower_wallet_id: str
    wallet: str


@dataclass(frozen=True, slots=True)
class WalletView:
    """A wallet's booked LIVE positions and the tokens not to touch this round."""

    booked: list[Booked]
    busy: set[str]
    subscriptions: dict[str, dict[str, shares.Part]]  # asset → the current life's split between its subscriptions
    resolved: set[str] = field(default_factory=set)  # open tokens whose market's resolution is recorded
    lost: set[str] = field(default_factory=set)  # open tokens compared even so: a LOST SELL settlement waits for
    # open token → the copy BUYs of it ended LOST a raise of its count is credited to, in order (common.lost_buys)
    lost_buys: dict[str, list[LostBuy]] = field(default_factory=dict)


_BOOKED = """
SELECT asset_id, state, size, avg_price, cost_usd, subscription_id, subscription_shares::text AS shares FROM positions
WHERE follower_wallet_id = %(w)s AND venue = 'INSIDERS'
"""

_PARTS = """
SELECT size, cost_usd, subscription_shares::text AS shares FROM positions
WHERE follower_wallet_id = %(w)s AND asset_id = %(a)s AND state = 'OPEN'
"""

# the wallet's open tokens of a market with a recorded resolution (resolved_assets, by key): settlement's to end
_RESOLVED = """
SELECT p.asset_id FROM positions p
WHERE p.follower_wallet_id = %(w)s AND p.state = 'OPEN'
  AND EXISTS (SELECT 1 FROM resolved_assets ra WHERE ra.asset_id = p.asset_id)
"""

# open tokens whose LOST SELL settlement waits for a count of, resolved or not (common.lost_sells.awaited)
_LOST = f"""SELECT x.asset_id FROM positions x
WHERE x.follower_wallet_id = %(w)s AND x.state = 'OPEN' AND {awaited("x", market_of("x"))}"""

# an order in flight
_IN_FLIGHT = """
SELECT asset_id FROM order_pending WHERE follower_wallet_id = %(w)s AND terminal_at IS NULL
"""

# positions changed (a fill booked, a sale that closed one) since the earlier of the grace before the venue was asked
# and the oldest count time minus the grace (``since``; NULL: none known); a booking moves updated_at (PostgreSQL's
# clock), reconciliation only when it opens an EXTERNAL position. ``changed_since_count`` keeps those changed too
# recently for their count.
_CHANGED = """
SELECT asset_id, updated_at, now() - make_interval(secs => %(grace)s) AS asked_cutoff FROM positions
WHERE follower_wallet_id = %(w)s
  AND updated_at > least(now() - make_interval(secs => %(grace)s), %(since)s::timestamptz)
"""


def stored_condition(condition_id: str) -> str:
    """The condition id an EXTERNAL position is stored under: 0x + 64 hex, lower-cased; "" for anything else (not
    known: settlement then finds the position by its token, and a later booking fills it in)."""
    return market_condition(condition_id.strip())


# The split a booking stores (``subscription_shares.stored``) of a position whose parts are ``{split}`` (jsonb): NULL
# when it is empty or its opening subscription's alone (the row's subscription_id, "" for none), as almost every
# position is. A one-part split of its opener would read as a split kept, and a copy SELL of any other subscription
# of the wallet (one re-created after its opener was stopped) would hold none of the wallet's shares.
_STORED = "CASE WHEN {split} - coalesce(p.subscription_id, '') <> '{{}}'::jsonb THEN {split} END"

# The wallet's positions the round writes, locked first, in key order, as booking and settlement take positions: the
# statements below take them one after another (a correction of one token and the count of another, in the other
# order, deadlocked with a settlement of their market). A new EXTERNAL position's row is inserted here, in its place
# in that order, empty (as a booking's, which _EXTERNAL fills in); inserted by _EXTERNAL after the others were locked,
# it deadlocked with a booking that had inserted it and waited for one of them. Only a token without a row is
# inserted, and every token but an EXTERNAL one was read from its row (rows are never deleted); the update locks an
# existing row without writing it.
_LOCK = """
INSERT INTO positions AS p (follower_wallet_id, asset_id, condition_id, wallet)
SELECT %(w)s, r.a, r.c, %(proxy)s FROM json_to_recordset(%(rows)s::json) AS r(a text, c text)
ORDER BY r.a
ON CONFLICT (follower_wallet_id, asset_id) DO UPDATE SET size = p.size WHERE false
"""

_LOST_UNSEEN = f"""
SELECT EXISTS (SELECT 1 FROM {lost_of("%(w)s", "IS NOT NULL")}
               JOIN positions x ON x.follower_wallet_id = l.follower_wallet_id AND x.asset_id = l.asset_id
               WHERE {unseen("x")}) AS unseen
"""

# when the venue took the count a row is reconciled to (``r.t``, Unix seconds; NULL: unknown, taken since the round
# asked), never later than now: a count taken before a SELL ended LOST may lack its sale (common/lost_sells.py)
_COUNTED = "least(now(), coalesce(to_timestamp(r.t), now()))"

# only a position still as compared, of a market with no resolution recorded (one recorded since the view was read
# leaves it to settlement) or whose LOST SELL settlement waits for a count of
_CORRECT = f"""
UPDATE positions p SET size = r.after, cost_usd = r.cost, venue_shares = r.after, reconciled_at = {_COUNTED},
    state = CASE WHEN r.after > 0 THEN 'OPEN' ELSE 'CLOSED' END,
    closed_at = CASE WHEN r.after > 0 THEN NULL ELSE now() END,
    avg_price = CASE WHEN r.after > 0 THEN p.avg_price ELSE 0 END,
    subscription_shares = {_STORED.format(split="r.shares")}
FROM json_to_recordset(%(rows)s::json) AS r(a text, before numeric, after numeric, cost_before numeric, cost numeric,
     shares jsonb, t float8)
WHERE p.follower_wallet_id = %(w)s AND p.asset_id = r.a AND p.state = 'OPEN' AND p.size = r.before
  AND p.cost_usd = r.cost_before AND ({market_of("p")} IS NULL OR {awaited("p", market_of("p"))})
RETURNING p.asset_id, p.id, p.subscription_id
"""

# what the venue reported for positions that agree: shown as venueShares (no correction, no audit row); a split of the
# opener alone, which corrections used to store, is dropped (it reads as the same position, but as one split)
_SEEN = f"""
UPDATE positions p SET venue_shares = r.size,
    reconciled_at = CASE WHEN r.compared THEN {_COUNTED} ELSE p.reconciled_at END,
    subscription_shares = {_STORED.format(split="p.subscription_shares")}
FROM json_to_recordset(%(rows)s::json) AS r(a text, size numeric, t float8, compared boolean)
WHERE p.follower_wallet_id = %(w)s AND p.asset_id = r.a AND p.state = 'OPEN'
"""

# A correction seen by whoever folds a subscription's fills (guard's performance rules): each subscription's part of
# it as a fill at the position's average cost (no PnL: the shares' sale or transfer happened outside the engine), under
# an order id of its own, so nothing that sums an order's fills counts it. Written after _CORRECT, so the position's
# condition and outcome are read from the corrected row.
_CORRECTION_FILLS = f"""
INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, outcome, side, size,
                   price, notional_usd, venue, fill_time, fee_shares)
SELECT r.id, r.sub, p.follower_wallet_id, 'reconcile_' || p.id, p.asset_id, p.condition_id, p.outcome, r.side,
       r.size, r.price, r.notional, p.venue, {_COUNTED}, 0
FROM json_to_recordset(%(rows)s::json) AS r(id text, a text, sub text, side text, size numeric, price numeric,
     notional numeric, t float8)
JOIN positions p ON p.follower_wallet_id = %(w)s AND p.asset_id = r.a
ON CONFLICT (id) DO NOTHING
"""

# the partial index orders_refused_sells_by_id (migration 0560) holds every row this predicate can match
_REFUSED_SELLS = """
SELECT order_proto, extract(epoch FROM now() - terminal_at) AS age_s FROM orders
WHERE state = 'REJECTED' AND side = 'SELL' AND reason = 'INVALID_ORDER_NOT_ENOUGH_BALANCE' AND venue = %(venue)s
  AND terminal_at > now() - make_interval(secs => %(window)s) AND client_order_id NOT LIKE 'co\\_rs\\_%%'
ORDER BY terminal_at
"""


class ReconcileStore:
    """Reconciliation's reads and writes (connections of the executor's pool: fenced by its lease)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *,
                 on_write_error: Callable[[BaseException], object] | None = None) -> None:
        self.pool = pool
        self.fenced = FencedWrites(on_write_error)  # told of each failed write (the lease: of the fence's refusal)

    async def live_wallets(self) -> list[LiveWallet]:
        """Every follower wallet copying LIVE, and every one holding an Insiders position not ended (OPEN, or won and
        not redeemed: its subscriptions stopped, or a manual position only), with its proxy."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LIVE_WALLETS)
            return [LiveWallet(r["follower_wallet_id"], r["proxy"]) for r in await cur.fetchall()]

    async def refused_sells(self, window_s: float, venue: str) -> list[tuple[bytes, float]]:
        """SELLs of ``venue`` (INSIDERS, PAPER) refused for lack of shares in the last ``window_s`` (not themselves
        re-sized ones): each one's Order as received and the seconds since its refusal, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_REFUSED_SELLS, {"window": window_s, "venue": venue})
            return [(bytes(r["order_proto"]), float(r["age_s"])) for r in await cur.fetchall()]

    async def view(self, follower_wallet_id: str, grace_s: float, asked_at: float | None = None,
                   counted: CountTime | None = None) -> WalletView:
        """The wallet's booked LIVE positions, its open tokens whose market's resolution is recorded (settlement's to
        end) and those whose LOST SELL settlement waits for a count of, and its busy tokens: those with an order under
        way, and those whose position changed within ``grace_s`` before the venue's count was taken (``counted``: the
        venue's asOf, :func:`~services.executor.domain.reconcile.changed_since_count`) or before the venue was asked
        (``asked_at``, ``time.monotonic()``; now when None), whichever is earlier. The venue's answer may lack a
        fill booked shortly before its count; the time the answer and this read took (a slow venue, a wait for a
        connection) is added to the grace before the asking, so it never eats into it."""
        count = counted or CountTime()
        earliest = count.earliest()
        async with self.pool.connection() as conn, conn.pipeline():  # the reads in one round trip
            since_asked = 0.0 if asked_at is None else max(0.0, time.monotonic() - asked_at)
            args = {"w": follower_wallet_id, "grace": grace_s + since_asked,
                    "since": None if earliest is None else datetime.fromtimestamp(earliest - grace_s, UTC)}
            booked, flight_cur, changed_cur, resolved_cur, lost_cur, buys_cur = [
                await conn.execute(q, args) for q in (_BOOKED, _IN_FLIGHT, _CHANGED, _RESOLVED, _LOST, CLAIMABLE)]
            rows = await booked.fetchall()
            busy = {r["asset_id"] for r in await flight_cur.fetchall()}
            changed = await changed_cur.fetchall()
            resolved = {r["asset_id"] for r in await resolved_cur.fetchall()}
            lost = {r["asset_id"] for r in await lost_cur.fetchall()}
            lost_buys: dict[str, list[LostBuy]] = {}
            for r in await buys_cur.fetchall():
                lost_buys.setdefault(r["asset_id"], []).append(_lost_buy(r))
        if changed:
            busy |= changed_since_count({r["asset_id"]: r["updated_at"].timestamp() for r in changed},
                                        changed[0]["asked_cutoff"].timestamp(), count, grace_s)
        return WalletView([Booked(r["asset_id"], r["state"], r["size"], r["avg_price"], r["cost_usd"]) for r in rows],
                          busy, {r["asset_id"]: shares.split_of(
                              shares.decode(orjson.loads(r["shares"])) if r["shares"] else None, r["size"],
                              r["cost_usd"], r["subscription_id"]) for r in rows}, resolved, lost, lost_buys)

    async def parts(self, follower_wallet_id: str, asset_id: str) -> dict[str, Decimal] | None:
        """Each subscription's shares of the wallet's open position in ``asset_id`` when it keeps a split that adds
        up to it; None when it keeps none (its opening subscription's alone, as almost always), keeps one that does
        not add up, or is not open."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PARTS, {"w": follower_wallet_id, "a": asset_id})
            row = await cur.fetchone()
        if row is None or not row["shares"]:
            return None
        split = shares.kept_split(shares.decode(orjson.loads(row["shares"])), row["size"], row["cost_usd"])
        return None if split is None else {k: p.shares for k, p in split.items()}

    async def lost_unseen(self, follower_wallet_id: str) -> bool:
        """Whether a LOST SELL of the wallet still counts as selling (``common.lost_sells``): its sale not shown by a
        count yet."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LOST_UNSEEN, {"w": follower_wallet_id})
            row = await cur.fetchone()
            return bool(row and row["unseen"])

    async def apply(self, wallet: LiveWallet, corrections: Sequence[Correction], agreeing: Sequence[AtVenue],
                    subscriptions: dict[str, dict[str, shares.Part]],
                    counted: CountTime | None = None, uncompared: Collection[str] = (),
                    lost_buys: Mapping[str, Sequence[LostBuy]] | None = None) -> list[Correction]:
        """Apply ``corrections`` (those whose booked size and cost are still what was compared; the rest wait for the
        next round), each subscription's part scaled with its position (``subscriptions``: asset → split, as
        read) but for a raise after copy BUYs ended LOST (``lost_buys``, :attr:`WalletView.lost_buys`), booked to their
        subscriptions first (``domain.lost_buys``; each one credited once), and record the venue's count of
        ``agreeing`` positions, as of when the venue took it (``counted``; None: now; the time is left as it was for
        the ``uncompared`` tokens, busy or resolved); returns the corrections applied."""
        with self.fenced:
            return await self._apply(wallet, corrections, agreeing, subscriptions, counted or CountTime(), uncompared,
                                     lost_buys or {})

    async def _apply(self, wallet: LiveWallet, corrections: Sequence[Correction], agreeing: Sequence[AtVenue],
                     subscriptions: dict[str, dict[str, shares.Part]], counted: CountTime,
                     uncompared: Collection[str], lost_buys: Mapping[str, Sequence[LostBuy]]) -> list[Correction]:
        w = wallet.follower_wallet_id
        fixes = [c for c in corrections if c.kind != EXTERNAL]
        external = [c for c in corrections if c.kind == EXTERNAL]
        applied: list[Correction] = []
        audit: list[dict[str, Any]] = []
        deltas: dict[str, Decimal] = {}
        async with self.pool.connection() as conn, pipelined_transaction(conn):
            # what this writes is the venue's count as seen now: lost in a crash of PostgreSQL's host, the next
            # round writes it again, so its commit does not wait for the WAL's flush (nor make the copy path's)
            await conn.execute("SET LOCAL synchronous_commit = off")
            touched = {c.asset_id: "" for c in fixes} | {v.asset_id: "" for v in agreeing} | {
                c.asset_id: stored_condition(c.condition_id) for c in external}
            if touched:
                await conn.execute(_LOCK, {"w": w, "proxy": wallet.wallet, "rows": orjson.dumps(
                    [{"a": a, "c": c} for a, c in touched.items()]).decode()})
            if fixes:
                claimed = {c.asset_id: claims(c.size_after - c.size_before, lost_buys.get(c.asset_id, ()))
                           for c in fixes if c.size_after > c.size_before and lost_buys.get(c.asset_id)}
                scaled = {c.asset_id: credited(subscriptions.get(c.asset_id, {}), c.size_after, c.cost_after,
                                               c.avg_price, claimed.get(c.asset_id, ())) for c in fixes}
                cur = await conn.execute(_CORRECT, {"w": w, "rows": orjson.dumps([
                    {"a": c.asset_id, "before": str(c.size_before), "after": str(c.size_after),
                     "cost_before": str(c.cost_before), "cost": str(c.cost_after),
                     # the parts as scaled; _CORRECT stores none when they are the row's opener's alone
                     "shares": shares.encode(scaled[c.asset_id][0]) or None, "t": counted.at(c.asset_id)}
                    for c in fixes]).decode()})
                done = {r["asset_id"]: r["id"] for r in await cur.fetchall()}
                if credits := [{"id": b.client_order_id, "n": str(n)} for a, got in claimed.items() if a in done
                               for b, n in got]:
                    await conn.execute(CREDITED, {"rows": orjson.dumps(credits).decode()})
                fills: list[dict[str, Any]] = []
                for c in fixes:
                    if c.asset_id in done:
                        applied.append(c)
                        audit.append(_audit(done[c.asset_id], c))
                        for charge in scaled[c.asset_id][1]:
                            if charge.subscription_id:
                                deltas[charge.subscription_id] = (deltas.get(charge.subscription_id, Decimal(0))
                                                                  + charge.exposure_delta_usd)
                                fills.extend(_correction_fill(c.asset_id, charge))
                if fills:  # at the count's time: common.lost_sells reads what a count after a LOST SELL corrected
                    for f in fills:
                        f["t"] = counted.at(f["a"])
                    await conn.execute(_CORRECTION_FILLS, {"w": w, "rows": orjson.dumps(fills).decode()})
            if external:
                for c in external:
                    if c.condition_id and not stored_condition(c.condition_id):
                        log.warning("EXTERNAL position stored without the venue's malformed condition id",
                                    extra={"wallet_id": w, "asset_id": c.asset_id,
                                           "condition_id": c.condition_id[:80]})
                rows = orjson.dumps([{"a": c.asset_id} for c in external]).decode()
                await conn.execute(_ARCHIVE, {"w": w, "rows": rows})
                cur = await conn.execute(_EXTERNAL, {"w": w, "proxy": wallet.wallet, "rows": orjson.dumps([
                    {"a": c.asset_id, "c": stored_condition(c.condition_id), "size": str(c.size_after),
                     "avg": str(c.avg_price),
                     "cost": str(c.cost_after), "outcome": c.outcome,
                     "pid": new_id("pos")}
                    for c in external]).decode()})
                done = {r["asset_id"]: r["id"] for r in await cur.fetchall()}
                for c in external:
                    if c.asset_id in done:
                        applied.append(c)
                        audit.append(_audit(done[c.asset_id], c))
            if agreeing:
                await conn.execute(_SEEN, {"w": w, "rows": orjson.dumps(
                    [{"a": v.asset_id, "size": str(v.size), "t": counted.at(v.asset_id),
                      "compared": v.asset_id not in uncompared} for v in agreeing]
                ).decode()})
            if deltas:
                await conn.execute(_STATS, (orjson.dumps([{"sub": s, "delta": str(d)} for s, d in deltas.items()])
                                            .decode(),))
            if audit:
                await conn.execute(AUDIT, (ENGINE_CALLER, "executor.Reconcile", orjson.dumps(audit).decode()))
        return applied


def _correction_fill(asset_id: str, charge: shares.Charge) -> list[dict[str, Any]]:
    """The fills row of one subscription's part of a correction (none when its shares did not change)."""
    if charge.shares == 0:
        return []
    size, notional = abs(charge.shares), abs(charge.exposure_delta_usd)
    return [{"id": new_id("fill"), "a": asset_id, "sub": charge.subscription_id,
             "side": "BUY" if charge.shares > 0 else "SELL", "size": str(size),
             # an average cost above $1 (fee shares on a BUY near 1) is no price: fills hold prices in [0, 1], and
             # what folds a subscription's fills reads the notional
             "price": str(min(ONE, (notional / size).quantize(PRICE_QUANTUM))), "notional": str(notional)}]


def _lost_buy(r: dict[str, Any]) -> LostBuy:
    """A LOST copy BUY read by ``CLAIMABLE``: the most it may have bought by its terms, the slippage its limit was
    moved by read from the Order as received (none when it named its limit, or cannot be read)."""
    try:
        order = epb.Order.FromString(bytes(r["order_proto"]))
        bps = 0 if order.limit_price else order.max_slippage_bps
        fee = order_taker_fee(order.taker_fee_rate, order.taker_fee_exponent)
    except DecodeError:
        bps, fee = 0, None
    return LostBuy(r["client_order_id"], r["subscription_id"], most_bought(
        r["size"], r["filled_size"], r["amount_usd"], r["filled_notional"], r["limit_price"], bps, fee))


def _audit(position_id: str, c: Correction) -> dict[str, Any]:
    return {"type": "position", "id": position_id,
            "before": {"shares": fmt(c.size_before), "costUsd": fmt(c.cost_before)},
            "after": {"shares": fmt(c.size_after), "costUsd": fmt(c.cost_after), "correction": c.kind,
                      "assetId": c.asset_id}}

