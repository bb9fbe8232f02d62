"""Booking fills in bulk: ``fills`` rows, ``positions`` (with each subscription's part of them) and
``subscription_stats``, inside the journal's transaction, in three statements per batch whatever its size (the
``fills`` insert can ride along with the journal's order updates: :data:`INSERT_FILLS`, then :func:`book_new`), two
more for each position sold and bought again within the batch (:func:`lives_apart`), one for the wallets' realized
PnL of the day when a fill realized some (:mod:`~services.executor.adapters.day_pnl`), and one noting the fills not
booked when there are some (last, below). The batch's copies declined as skips are counted by the same stats upsert.
What a fill does to a position is :mod:`services.executor.domain.fill_math`.

A fill replayed after a restart conflicts on its id and books nothing. A booking takes every position of the batch
first, in (wallet, asset) order, then every stats row in one upsert, in subscription order, then the wallets' day
rows: settlement and reconciliation take them in that order too, so none of them deadlocks with it.

A position has one venue (settlement, reconciliation and exits go by it). A fill of the other venue than the
position's open life (which admission keeps from happening: ``order_store.ADMIT_INTENTS``) keeps its ``fills`` row
but is not booked into the position nor the stats: it is logged, counted (``executor.fills_of_other_venue``) and
alerted (``FILL_NOT_BOOKED``: shares the wallet has that no position shows, until someone books them by hand), once
the booking committed, from the note its transaction made of it (:mod:`~services.executor.adapters.unbooked`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from psycopg import AsyncCursor
from psycopg.rows import DictRow

from common.decimals import ZERO
from common.ids import hash_id
from common.text import storable
from services.executor.adapters.day_pnl import book_day_pnl
from services.executor.adapters.order_sql import INSERT_FILLS, RECORD_COUNTS, SKIPS, UPSERT_COUNTS
from services.executor.adapters.unbooked import Aside, NotBooked, export, note, report
from services.executor.domain import subscription_shares as shares
from services.executor.domain.fill_math import Booked, Booking, Opening, settle
from services.executor.domain.order_intake import market_condition
from services.executor.domain.position_math import Position
from services.executor.domain.ticket import Ticket

# Creates the missing positions and locks every one (the no-op update takes the row lock), returning
# the current values: one statement instead of an insert and a SELECT ... FOR UPDATE. Rows are
# taken in (wallet, asset) order, so concurrent executors cannot deadlock.
_LOCK_POSITIONS = """
INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet)
SELECT r.w, r.a, r.c, r.p FROM json_to_recordset(%s::json) AS r(w text, a text, c text, p text)
ORDER BY r.w, r.a
ON CONFLICT (follower_wallet_id, asset_id) DO UPDATE SET size = positions.size
RETURNING follower_wallet_id, asset_id, size, avg_price, cost_usd, realized_pnl_usd, subscription_id,
          subscription_shares::text AS shares, venue
"""

CUSTOM_PLAN_ROWS = 16  # bookings of this many positions or more are planned for themselves (see below)

# ``fills_version`` counts the bookings of the subscription's fills (readers cache by it). Rows are taken in
# subscription order, as settlement, reconciliation and the router's skip counts take them: in the fills' order, two
# transactions meeting the same two subscriptions the other way round deadlocked. A booking with skips to count
# upserts ``order_sql.UPSERT_COUNTS`` instead (:func:`_variant`), in the same place.
_UPSERT_STATS = """
INSERT INTO subscription_stats (subscription_id, copied, exposure_usd, realized_pnl_usd, updated_at, fills_version)
SELECT r.sub, r.copied, r.exposure, r.pnl, now(), 1
FROM json_to_recordset(%s::json) AS r(sub text, copied bigint, exposure numeric, pnl numeric)
ORDER BY r.sub
ON CONFLICT (subscription_id) DO UPDATE SET copied = subscription_stats.copied + EXCLUDED.copied,
    exposure_usd = GREATEST(0, subscription_stats.exposure_usd + EXCLUDED.exposure_usd),
    realized_pnl_usd = subscription_stats.realized_pnl_usd + EXCLUDED.realized_pnl_usd, updated_at = now(),
    fills_version = subscription_stats.fills_version + 1
"""


# The subscriptions' deltas and the positions' new values, in one statement. ``pnl_day_realized_usd``
# adds this booking's realized change (new minus stored) to what the position realized earlier on the
# same UTC day; the first booking of a day starts from zero.
#
# The life that ended is found by key for each row (``OFFSET 0``: a lateral lookup, not a join the planner may turn
# round). A batch of :data:`CUSTOM_PLAN_ROWS` positions or more is planned for itself: a plan a connection cached
# while ``positions`` held a row or two walks the whole table for each row of the batch (a 1,000-follower fan-out
# after 12,000 copies: 85 ms a booking instead of 5), and planning it again (about a millisecond) is small beside
# such a batch.
#
# A fill that opens a position starts a new life (``r.pid`` set): the row takes the new id, origin,
# subscription, venue, outcome and condition id, its realized PnL so far becomes the new life's base, it has no
# venue count until the next reconciliation (the last one counted the life before), and the life
# that ended before it (closed, resolved or redeemed) is first copied into position_history. A position whose
# shares are all sold is CLOSED. ``subscription_shares`` is the position's split between its subscriptions (NULL:
# its opening subscription's alone). ``{parts}`` is where :data:`_PART_FILLS` goes when the booking has some.
#
# The condition id (``r.c``, the order's: intake gave it the market its token's book names) is where ingest's REST
# safety net checks the position and the router counts it (``coalesce(nullif(condition_id, ''), asset_id)``). A
# new life takes its opening order's, whatever it is, as a new row does: a copy of a trade without conditionId
# carries its token's market as the router knew it, else none, and the router counts it against its token (and
# such a position in its token's market once it knows the market: read_model.in_token_market). Within a life, an
# order naming a market (``r.k``: the venue's form, 0x + 64 lower hex) writes it over another one (a row booked
# under another market's id before
# every order took its book's kept it for every later life: the wrong market checked, the router counting the
# position against it), and over none, but for a life a copy opened under none (``origin`` COPY: the router
# counts it against its token as long as it lasts, while its exits and manual orders name the market); an order
# naming none (or an id of another form) keeps the row's.
_UPDATE_TEMPLATE = f"""
WITH {{counts}}s AS ({_UPSERT_STATS.strip()}),
r AS (SELECT * FROM json_to_recordset(%s::json) AS r(w text, a text, c text, k boolean, size numeric, avg numeric,
      cost numeric, pnl numeric, pid text, origin text, sub text, venue text, outcome text, base numeric,
      shares jsonb)),
h AS (
    INSERT INTO position_history (id, follower_wallet_id, asset_id, condition_id, wallet, state, origin,
        subscription_id, venue, outcome, size, avg_price, cost_usd, realized_pnl_usd, resolved_shares,
        resolved_cost_usd, payout_per_share, winning_asset_id, resolved_at, venue_shares, reconciled_at, opened_at,
        closed_at, updated_at)
    SELECT p.id, p.follower_wallet_id, p.asset_id, p.condition_id, p.wallet, p.state, p.origin, p.subscription_id,
        p.venue, p.outcome, p.size, p.avg_price, p.cost_usd, p.realized_pnl_usd - p.realized_base_usd,
        p.resolved_shares, p.resolved_cost_usd, p.payout_per_share, p.winning_asset_id, p.resolved_at,
        p.venue_shares, p.reconciled_at,
        p.opened_at, coalesce(p.closed_at, now()), p.updated_at
    FROM r CROSS JOIN LATERAL (SELECT * FROM positions x WHERE x.follower_wallet_id = r.w AND x.asset_id = r.a
                               OFFSET 0) p
    WHERE r.pid IS NOT NULL AND p.id IS NOT NULL AND p.state <> 'OPEN'
    ON CONFLICT (id) DO NOTHING
){{parts}}
UPDATE positions p SET size = r.size, avg_price = r.avg, cost_usd = r.cost, realized_pnl_usd = r.pnl,
    subscription_shares = r.shares,
    pnl_day_realized_usd = CASE WHEN p.pnl_day = (now() AT TIME ZONE 'UTC')::date THEN p.pnl_day_realized_usd
                                ELSE 0 END + (r.pnl - p.realized_pnl_usd),
    pnl_day = (now() AT TIME ZONE 'UTC')::date,
    opened_at = CASE WHEN r.pid IS NOT NULL THEN now() ELSE p.opened_at END, updated_at = now(),
    condition_id = CASE WHEN r.pid IS NOT NULL OR r.k AND (p.condition_id <> '' OR p.origin <> 'COPY') THEN r.c
                        ELSE p.condition_id END,
    id = coalesce(r.pid, p.id),
    state = CASE WHEN r.size > 0 THEN 'OPEN' WHEN r.pid IS NOT NULL OR p.state = 'OPEN' THEN 'CLOSED'
                 ELSE p.state END,
    closed_at = CASE WHEN r.size > 0 THEN NULL WHEN r.pid IS NOT NULL OR p.state = 'OPEN' THEN now()
                     ELSE p.closed_at END,
    origin = coalesce(r.origin, p.origin),
    subscription_id = CASE WHEN r.pid IS NOT NULL THEN r.sub ELSE p.subscription_id END,
    venue = coalesce(r.venue, p.venue),
    outcome = CASE WHEN r.pid IS NOT NULL OR p.outcome = '' THEN r.outcome ELSE p.outcome END,
    realized_base_usd = coalesce(r.base, p.realized_base_usd),
    resolved_shares = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.resolved_shares END,
    resolved_cost_usd = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.resolved_cost_usd END,
    payout_per_share = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.payout_per_share END,
    winning_asset_id = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.winning_asset_id END,
    resolved_at = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.resolved_at END,
    venue_shares = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.venue_shares END,
    reconciled_at = CASE WHEN r.pid IS NOT NULL THEN NULL ELSE p.reconciled_at END
FROM r
WHERE p.follower_wallet_id = r.w AND p.asset_id = r.a
"""
# The same for a batch of fewer than CUSTOM_PLAN_ROWS, whose plan a connection caches: the positions it may read
# are bounded by the batch's wallets (an index condition), so even a plan made on a near-empty table reads the
# batch's rows, not the whole table. (A large batch planned for itself finds each row by key without the bound,
# which would let the planner read the wallets' rows once and compare them with every row of the batch.)
_FEW_TEMPLATE = _UPDATE_TEMPLATE.rstrip() + " AND p.follower_wallet_id = ANY(ARRAY(SELECT w FROM r))\n"

# A SELL, or a BUY's fee, that took shares of other subscriptions than its order's: a fills row for each of those
# parts (under an order id of its own, so nothing that sums an order's fills counts them), so that whoever folds a
# subscription's fills (guard's performance rules) sees its shares leave: a SELL's sells them, a fee's is a BUY of
# size 0 whose fee_shares are the shares taken (as a fee booked alone). Only statements that have such rows carry it.
_PART_FILLS = """,
pf AS (
    INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, outcome, side, size,
                       price, notional_usd, venue, fill_time, fee_shares)
    SELECT f.id, f.sub, f.wallet, f.oid, f.asset, f.cond, f.outcome, f.side, f.size, f.price, f.notional, f.venue,
           to_timestamp(f.fill_ms / 1000.0), f.fee
    FROM json_to_recordset(%s::json) AS f(id text, sub text, wallet text, oid text, asset text, cond text,
         outcome text, side text, size numeric, price numeric, notional numeric, venue text, fill_ms bigint,
         fee numeric)
    ON CONFLICT (id) DO NOTHING
)"""
PART_ORDER_PREFIX = "part_"


def _variant(sql: str, parts: bool, skips: bool) -> str:
    """The positions statement with part fills, and with skips counted, or not."""
    if skips:
        sql = sql.replace("{counts}", SKIPS + ",\n").replace(_UPSERT_STATS.strip(), UPSERT_COUNTS.strip())
    return sql.replace("{counts}", "").replace("{parts}", _PART_FILLS if parts else "")


# (few positions, with part fills, with skips) → statement
_UPDATES = {(few, parts, skips): _variant(sql, parts, skips) for few, sql in ((False, _UPDATE_TEMPLATE),
            (True, _FEW_TEMPLATE)) for parts in (False, True) for skips in (False, True)}
_UPDATE_POSITIONS_AND_STATS = _UPDATES[(False, False, False)]
_UPDATE_FEW_POSITIONS_AND_STATS = _UPDATES[(True, False, False)]


def _fill_row(t: Ticket, b: Booking) -> dict[str, Any]:
    o = t.order
    latency = t.copy_latency_ms()
    return {"id": b.fill_id, "sub": o.subscription_id, "wallet": o.follower_wallet_id, "coid": t.client_order_id,
            "lt": o.leader_trade_id, "tx": o.leader_tx_hash, "asset": o.asset_id, "cond": o.condition_id,
            "outcome": storable(o.outcome), "side": t.side, "size": str(b.size), "price": str(b.price),
            "notional": str(b.notional), "venue": t.venue, "fill_ms": b.fill_time_ms,
            "lt_ms": o.leader_venue_time_ms, "latency": str(latency) if latency is not None else None,
            "fee": str(max(ZERO, b.fee_shares)) if t.buying else "0"}


def fills_json(fills: list[tuple[Ticket, Booking]]) -> str:
    """The JSON parameter of :data:`INSERT_FILLS`."""
    return orjson.dumps([_fill_row(t, b) for t, b in fills]).decode()


async def book(cur: AsyncCursor[DictRow], fills: list[tuple[Ticket, Booking]], skips: str | None = None,
               aside: Aside | None = None) -> list[Booked]:
    """Book ``fills`` (in order) in the cursor's transaction, counting ``skips`` (the JSON parameter of
    :data:`~.order_sql.SKIPS`) with their stats; replays book nothing. The fills inserted now, and those not booked,
    go into ``aside``, for the caller to report once it committed (without one: reported at once)."""
    if not fills:
        if skips is not None:
            await cur.execute(RECORD_COUNTS, (skips, "[]"))
        return []
    await cur.execute(INSERT_FILLS, (fills_json(fills),))
    new_ids = {r["id"] for r in await cur.fetchall()}
    if aside is not None:
        aside.new |= new_ids
    return await book_new(cur, [(t, b) for t, b in fills if b.fill_id in new_ids], skips, aside)


class _Counts:
    """The stats deltas of a booking's parts and its skips, written once, by the last positions statement."""

    def __init__(self, skips: str | None) -> None:
        self.skips = skips
        self.stats: dict[str, list[Any]] = {}  # subscription → [copied, exposure, pnl]
        self.pending = skips is not None

    def add(self, stats: Mapping[str, Any]) -> None:
        """Add a part's deltas (``fill_math.settle``'s)."""
        for sub, d in stats.items():
            acc = self.stats.setdefault(sub, [0, ZERO, ZERO])
            acc[0], acc[1], acc[2] = acc[0] + d.copied, acc[1] + d.exposure, acc[2] + d.pnl
        self.pending = self.pending or bool(stats)

    def take(self) -> tuple[str, ...]:
        """The parameters of the stats upsert (the skips' first when there are some); none pending after."""
        self.pending = False
        stats = orjson.dumps([{"sub": sub, "copied": c, "exposure": str(e), "pnl": str(p)}
                              for sub, (c, e, p) in self.stats.items()]).decode()
        return (stats,) if self.skips is None else (self.skips, stats)


async def book_new(cur: AsyncCursor[DictRow], fresh: list[tuple[Ticket, Booking]], skips: str | None = None,
                   aside: Aside | None = None) -> list[Booked]:
    """Positions and subscription stats of fills whose ``fills`` rows were inserted now (in order), and the
    ``skips`` counted, in the cursor's transaction: two statements per part of :func:`lives_apart` (one part,
    whatever the batch size, unless a position is sold and bought again within the batch), then the wallets' day
    when PnL was realized, then the fills not booked noted, when there are some (:func:`.unbooked.note`). The first
    part locks the positions of all, the last one writes the stats of all. The fills not booked go into ``aside``
    (:func:`book`)."""
    export()
    booked: list[Booked] = []
    counts = _Counts(skips)
    found = Aside() if aside is None else aside
    parts = lives_apart(fresh)
    for i, part in enumerate(parts):
        ahead = [f for later in parts[i + 1:] for f in later] if i == 0 else []
        booked += await _book_part(cur, part, ahead, counts, i == len(parts) - 1, found)
    if counts.pending:  # the last part booked nothing (of another venue), or no fill was new
        await cur.execute(RECORD_COUNTS, (skips or "[]", counts.take()[-1]))
    await book_day_pnl(cur, ((done.ticket.order.follower_wallet_id, done.effect.realized_pnl_usd) for done in booked))
    await note(cur, found.not_booked, reported=aside is None)
    if aside is None:
        report(n.row() for n in found.not_booked)
    return booked

def lives_apart(fills: list[tuple[Ticket, Booking]]) -> list[list[tuple[Ticket, Booking]]]:
    """``fills`` in order, cut before a BUY of a position that a SELL, or a BUY's fee beyond its fill (it takes
    shares already held), earlier in the same part took shares from.

    The positions statement keeps one row per position and copies the life that ended into
    ``position_history`` from the row as stored: a life closed and a new one opened by the same statement would
    never be copied (and its realized PnL would be listed in no life). Cut there, the second part's statement
    finds the first life stored as CLOSED and copies it. A SELL or fee that did not close the position costs an
    extra statement pair, nothing more."""
    parts: list[list[tuple[Ticket, Booking]]] = []
    part: list[tuple[Ticket, Booking]] = []
    sold: set[tuple[str, str]] = set()
    for t, b in fills:
        key = (t.order.follower_wallet_id, t.order.asset_id)
        if t.buying and key in sold:
            parts.append(part)
            part, sold = [], set()
        part.append((t, b))
        if not t.buying or b.fee_shares > b.size:
            sold.add(key)
    if part:
        parts.append(part)
    return parts


async def _book_part(cur: AsyncCursor[DictRow], fresh: list[tuple[Ticket, Booking]],
                     ahead: list[tuple[Ticket, Booking]], counts: _Counts, last: bool,
                     aside: Aside) -> list[Booked]:
    """:func:`book_new` of fills in which no position is closed and opened again: two statements (the first also
    locks the positions of the fills ``ahead``; the stats are written by the ``last`` part's)."""
    keys: dict[tuple[str, str], Ticket] = {}
    for t, _ in fresh:
        keys.setdefault((t.order.follower_wallet_id, t.order.asset_id), t)
    locking = dict(keys)
    for t, _ in ahead:
        locking.setdefault((t.order.follower_wallet_id, t.order.asset_id), t)
    key_rows = [{"w": w, "a": a, "c": t.order.condition_id, "p": t.order.follower_proxy.lower()}
                for (w, a), t in locking.items()]
    await cur.execute(_LOCK_POSITIONS, (orjson.dumps(key_rows).decode(),))
    positions: dict[tuple[str, str], Position] = {}
    splits: dict[tuple[str, str], Mapping[str, shares.Part]] = {}
    openers: dict[tuple[str, str], str | None] = {}
    venues: dict[tuple[str, str], str | None] = {}
    for r in await cur.fetchall():
        key = (r["follower_wallet_id"], r["asset_id"])
        if key not in keys:
            continue
        positions[key] = Position(r["size"], r["avg_price"], r["cost_usd"], r["realized_pnl_usd"])
        openers[key] = r["subscription_id"]
        venues[key] = r["venue"] if r["size"] > 0 else None
        kept = shares.decode(orjson.loads(r["shares"])) if r["shares"] else None
        splits[key] = shares.split_of(kept, r["size"], r["cost_usd"], r["subscription_id"])
    fresh = _of_their_venue(fresh, venues, aside)
    if not fresh:
        return []
    booking = {(t.order.follower_wallet_id, t.order.asset_id) for t, _ in fresh}
    keys = {k: t for k, t in keys.items() if k in booking}
    booked, stats, opened = settle(positions, fresh, splits)
    counts.add(stats)
    rows = [_position_row(w, a, keys[(w, a)], p, opened.get((w, a)), splits[(w, a)], openers[(w, a)])
            for (w, a), p in positions.items() if (w, a) in keys]
    parts = [row for (_, b), done in zip(fresh, booked, strict=True) for row in _part_fills(b, done)]
    params = (counts.take() if last else ("[]",)) + (orjson.dumps(rows).decode(),)
    if parts:
        params += (orjson.dumps(parts).decode(),)
    few = len(rows) < CUSTOM_PLAN_ROWS
    await cur.execute(_UPDATES[(few, bool(parts), last and counts.skips is not None)], params,
                      prepare=None if few else False)
    return booked


def _of_their_venue(fills: list[tuple[Ticket, Booking]], venues: dict[tuple[str, str], str | None],
                    aside: Aside) -> list[tuple[Ticket, Booking]]:
    """``fills`` less those of another venue than their position's open life (``venues``: None when none is open,
    then the venue of the fill that opens it); those are never booked, but set ``aside``."""
    venues = dict(venues)
    kept = []
    for t, b in fills:
        key = (t.order.follower_wallet_id, t.order.asset_id)
        held = venues.get(key)
        if held is None:
            if t.buying and b.size > 0:
                venues[key] = t.venue
        elif held != t.venue:
            aside.not_booked.append(NotBooked(t, b, held))
            continue
        kept.append((t, b))
    return kept


def _position_row(w: str, a: str, t: Ticket, p: Position, opening: Opening | None,
                  split: Mapping[str, shares.Part], opener: str | None) -> dict[str, Any]:
    """The positions statement's row of one position (its split as stored for the life's opening subscription)."""
    c = t.order.condition_id
    row: dict[str, Any] = {"w": w, "a": a, "c": c, "k": bool(c) and market_condition(c) == c, "size": str(p.size),
                           "avg": str(p.avg_price), "cost": str(p.cost_usd), "pnl": str(p.realized_pnl_usd),
                           "outcome": storable(t.order.outcome),
                           "shares": shares.stored(split, opening.subscription_id if opening else opener)}
    if opening is not None:
        row.update(pid=opening.position_id, origin=opening.origin, sub=opening.subscription_id, venue=opening.venue,
                   outcome=opening.outcome, base=str(opening.realized_base_usd))
    return row


def _part_fills(b: Booking, done: Booked) -> list[dict[str, Any]]:
    """The fills rows of the parts a SELL (or a BUY's fee) took from other subscriptions than its order's."""
    t = done.ticket
    o = t.order
    return [{"id": hash_id("fill", b.fill_id, c.subscription_id), "sub": c.subscription_id,
             "wallet": o.follower_wallet_id, "oid": PART_ORDER_PREFIX + t.client_order_id, "asset": o.asset_id,
             "cond": o.condition_id, "outcome": storable(o.outcome), "side": t.side,
             "size": "0" if t.buying else str(c.shares), "price": str(b.price),
             "notional": "0" if t.buying else str(c.proceeds_usd), "venue": t.venue, "fill_ms": b.fill_time_ms,
             "fee": str(c.shares) if t.buying else "0"}
            for c in done.charges if c.shares > 0 and c.subscription_id and c.subscription_id != o.subscription_id]
