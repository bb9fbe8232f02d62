"""PostgreSQL access of the executor: order intents, state changes, the event outbox, fills and positions."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from common.decimals import ZERO
from common.lease import FencedWrites
from common.parts import others_own
from common.storage import KEYED_LOOKUPS, pipelined_transaction
from common.text import storable
from services.executor.adapters import order_sql as sql
from services.executor.adapters.fill_store import book, book_new, fills_json
from services.executor.adapters.intent_connection import IntentConnection
from services.executor.adapters.unanswered import UnansweredIntents
from services.executor.adapters.unbooked import Aside, Unbooked
from services.executor.domain import subscription_shares as shares
from services.executor.domain import venue_orders as v
from services.executor.domain.copy_skips import is_skip
from services.executor.domain.fill_math import Booked, Booking
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.sell_sizing import Refusal, copy_sellable
from services.executor.domain.ticket import Ticket
from tradingtools.execution.v1 import execution_pb2 as epb

__all__ = ["Change", "Inserted", "OrderStore", "row_life", "ticket_from_row"]

# The assets held (the watch set's repair, every ~30 s), read through positions_open_asset: a position holds shares
# only while OPEN (every writer keeps it so), and the ended lives `positions` keeps are not read.
HELD_ASSETS = "SELECT DISTINCT asset_id FROM positions WHERE state = 'OPEN' AND size > 0"
# one probe of index positions_open_asset per asset, ending at its first holder (not every wallet holding it)
HELD_AMONG = ("SELECT a AS asset_id FROM unnest(%s::text[]) AS a"
              " WHERE EXISTS (SELECT 1 FROM positions WHERE asset_id = a AND state = 'OPEN' AND size > 0)")
EVENTS_OF = "SELECT client_order_id FROM order_events WHERE event_id = ANY(%s)"  # the orders of events recorded

# Settings of the executor's connections: every join it runs looks rows up by key (common.storage).
PLANNER_OPTIONS = KEYED_LOOKUPS

ADMIT_INTENTS = sql.ADMIT_INTENTS  # INSERT_INTENTS holding orders to the wallet's execution mode


class Inserted(set[str]):
    """The client order ids whose intents were inserted now; ``refused``: those refused instead (client order id →
    reason, detail), not inserted."""

    def __init__(self, ids: Iterable[str] = (), refused: dict[str, tuple[str, str]] | None = None) -> None:
        super().__init__(ids)
        self.refused = refused or {}

    @classmethod
    def of_rows(cls, rows: Iterable[Sequence[str | None]]) -> Inserted:
        """From :data:`ADMIT_INTENTS`'s rows."""
        out = cls()
        for coid, reason, detail in rows:
            if coid is None:
                continue
            if reason is None:
                out.add(coid)
            else:
                out.refused[coid] = (reason, detail or "")
        return out


@dataclass(frozen=True, slots=True)
class Change:
    """One state change to persist: the order after it, its OrderEvent (if any) and fill (if any)."""

    ticket: Ticket
    life: OrderLife
    event: epb.OrderEvent | None = None
    booking: Booking | None = None


def _num(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def intent_json(items: list[tuple[Ticket, OrderLife]]) -> str:
    """The JSON parameter of :data:`sql.INSERT_INTENTS`."""
    rows = []
    for t, life in items:
        o = t.order
        req = t.request
        rows.append({
            "coid": t.client_order_id, "state": life.state.value, "venue": t.venue, "origin": t.origin,
            "sub": o.subscription_id, "wallet": o.follower_wallet_id, "proxy": o.follower_proxy, "asset": o.asset_id,
            "side": t.side, "otype": t.order_type, "amount": _num(req.amount_usd) if req else None,
            "size": _num(req.size) if req else None, "lp": _num(life.limit_price), "att": life.attempts,
            "reason": life.reason, "detail": storable(life.detail[:1000]), "lt": o.leader_trade_id, "trg": o.trigger_id,
            "proto": base64.b64encode(o.SerializeToString()).decode(), "arr": t.arrival_ns or None})
    return orjson.dumps(rows).decode()


def update_json(changes: list[Change]) -> str:
    """The JSON parameter of :data:`sql.UPDATE_ORDERS` (the last change of each order wins)."""
    latest: dict[str, Change] = {}
    for c in changes:
        latest[c.life.client_order_id] = c
    rows = []
    for c in latest.values():
        life, t = c.life, c.ticket
        rows.append({"coid": life.client_order_id, "state": life.state.value, "vid": life.venue_order_id,
                     "vst": life.venue_status, "lp": _num(life.limit_price), "att": life.attempts,
                     "nf": life.not_found, "mu": life.maybe_unsent, "pu": life.post_uncertain,
                     "fs": str(life.filled_size),
                     "ap": str(life.avg_price), "fee": str(t.fee_booked), "fn": str(t.notional_booked),
                     "reason": life.reason, "detail": storable(life.detail[:1000]), "ps": t.post_sent_ns or None,
                     "terminal": life.terminal})
    return orjson.dumps(rows).decode()


def skips_json(items: list[tuple[Ticket, OrderLife]]) -> str:
    """The skips' JSON parameter of :data:`sql.RECORD_COUNTS` (and of a booking): the skips among ``items``."""
    return orjson.dumps([{"sub": t.order.subscription_id, "lt": t.order.leader_trade_id,
                          "wallet": t.order.follower_wallet_id, "reason": life.reason,
                          "detail": storable(life.detail[:1000])}
                         for t, life in items if is_skip(t, life)]).decode()


def events_json(events: list[epb.OrderEvent]) -> str:
    """The JSON parameter of :data:`sql.INSERT_EVENTS`, in emission order."""
    return orjson.dumps([{"id": e.event_id, "coid": e.client_order_id, "type": epb.OrderEventType.Name(e.type),
                          "p": base64.b64encode(e.SerializeToString()).decode()} for e in events]).decode()


# Inserts of up to this many intents (single-order trades, a few batched together) take the dedicated
# connection; a fan-out's chunks keep going through the pool, side by side.
DEDICATED_MAX_INTENTS = 4


class OrderStore:
    """The executor's tables (``orders``, ``order_events``) and the shared ``fills``/``positions``/stats."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]], *, intents_url: str = "",
                 intents_options: str = "", on_write_error: Callable[[BaseException], object] | None = None) -> None:
        self.pool = pool
        # every write to a fenced table goes through it: told of its failure, the lease stops on the fence's refusal
        self.fenced = FencedWrites(on_write_error)
        # with a URL, intent inserts go through a dedicated connection whenever it is free (see intent_connection.py)
        self.intents = (IntentConnection(intents_url, ADMIT_INTENTS, options=intents_options) if intents_url
                        else None)
        self.unanswered = UnansweredIntents()  # tickets whose intent insert lost its answer
        self.unbooked = Unbooked(pool)  # fills of the other venue than their position's, reported once committed

    async def close(self) -> None:
        """Close the dedicated intent connection (the pool is closed by its owner)."""
        if self.intents is not None:
            await self.intents.close()

    async def insert_intents(self, items: list[tuple[Ticket, OrderLife]]) -> Inserted:
        """Insert order rows (one statement: all or none); returns the client order ids inserted now, and those of
        orders to be sent that were refused instead (:data:`ADMIT_INTENTS`; the others already existed), or whose
        row the same ticket's unanswered insert wrote (:mod:`.unanswered`)."""
        if not items:
            return Inserted()
        with self.fenced:
            try:
                inserted = await self._insert_intents(items)
                await self.unanswered.claim(self.pool, (t for t, _ in items), inserted, inserted.refused)
                return inserted
            except psycopg.OperationalError:
                self.unanswered.lost(t for t, _ in items)
                raise

    async def _insert_intents(self, items: list[tuple[Ticket, OrderLife]]) -> Inserted:
        payload = intent_json(items)
        if self.intents is not None and not self.intents.busy and len(items) <= DEDICATED_MAX_INTENTS:
            return Inserted.of_rows(await self.intents.insert(payload))
        async with self.pool.connection() as conn:
            cur = await conn.execute(ADMIT_INTENTS, (payload,))
            rows = await cur.fetchall()
            await conn.commit()  # a no-op in autocommit; ends the transaction on other pools
        return Inserted.of_rows((r["client_order_id"], r["reason"], r["detail"]) for r in rows)

    async def apply(self, inserts: list[Change], changes: list[Change]) -> tuple[set[str], list[Booked]]:
        """In one transaction: insert refused orders (with their event), update changed orders, add their
        events to the outbox, book their fills and count the copies declined as skips. Returns the inserted
        ids and the fills booked now. An order inserted by an earlier attempt of the same inserts (its commit
        went through unanswered) counts as inserted now: its event is there (event ids are unique). Fills not booked
        are reported once the transaction committed (:mod:`.unbooked`)."""
        aside = Aside()
        with self.fenced:
            try:
                result = await self._apply(inserts, changes, aside)
            except psycopg.OperationalError:
                self.unbooked.lost(aside)
                raise
        await self.unbooked.committed(aside, [c.booking.fill_id for c in changes if c.booking is not None])
        return result

    async def _apply(self, inserts: list[Change], changes: list[Change], aside: Aside
                     ) -> tuple[set[str], list[Booked]]:
        if not inserts and changes and not any(is_skip(c.ticket, c.life) for c in changes):
            return set(), await self._apply_changes(changes, aside)
        booked: list[Booked] = []
        inserted: set[str] = set()
        # Pipeline mode: statements whose results are not read go out with the next one, so BEGIN, the
        # updates, the events and the fills insert share one round trip, and the last ones the COMMIT's.
        async with self.pool.connection() as conn, pipelined_transaction(conn), conn.cursor() as cur:
            if inserts:
                await cur.execute(sql.INSERT_INTENTS, (intent_json([(c.ticket, c.life) for c in inserts]),))
                inserted = {r["client_order_id"] for r in await cur.fetchall()}
                if there := [c.event.event_id for c in inserts
                             if c.life.client_order_id not in inserted and c.event is not None]:
                    await cur.execute(EVENTS_OF, (there,))
                    inserted |= {r["client_order_id"] for r in await cur.fetchall()}
            events = [c.event for c in inserts if c.event is not None and c.life.client_order_id in inserted]
            if changes:
                await cur.execute(sql.UPDATE_ORDERS, (update_json(changes),))
                events += [c.event for c in changes if c.event is not None]
            if events:
                await cur.execute(sql.INSERT_EVENTS, (events_json(events),))
            skipped = [(c.ticket, c.life) for c in inserts if c.life.client_order_id in inserted]
            skipped += [(c.ticket, c.life) for c in changes]
            # the skips are counted with the fills' stats, after their positions (fill_store: lock order)
            skips = skips_json(skipped) if any(is_skip(t, life) for t, life in skipped) else None
            booked = await book(cur, [(c.ticket, c.booking) for c in changes if c.booking is not None], skips, aside)
        return inserted, booked

    async def _apply_changes(self, changes: list[Change], aside: Aside) -> list[Booked]:
        events = [c.event for c in changes if c.event is not None]
        fills = [(c.ticket, c.booking) for c in changes if c.booking is not None]
        params = (update_json(changes), events_json(events), fills_json(fills))
        if not fills:
            async with self.pool.connection() as conn:
                await conn.execute(sql.APPLY_CHANGES, params)
                await conn.commit()  # a no-op in autocommit; ends the transaction on other pools
            return []
        # Not in pipeline mode: measured here, a flush of 10 orders' accepts and fills costs ~15% less
        # executor CPU as plain statements (BEGIN, 3 statements, COMMIT) than pipelined.
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(sql.APPLY_CHANGES, params)
            aside.new = {r["id"] for r in await cur.fetchall()}
            return await book_new(cur, [(t, b) for t, b in fills if b.fill_id in aside.new], aside=aside)

    async def held_assets(self, among: list[str] | None = None) -> set[str]:
        """The assets any wallet holds (of ``among`` when given): some position of it has shares."""
        async with self.pool.connection() as conn:
            cur = await (conn.execute(HELD_ASSETS) if among is None else conn.execute(HELD_AMONG, (among,)))
            return {r["asset_id"] for r in await cur.fetchall()}

    async def open_orders(self) -> list[dict[str, Any]]:
        """Every order not yet terminal, in the order they arrived."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.OPEN_ORDERS)
            return list(await cur.fetchall())

    async def open_among(self, client_order_ids: list[str]) -> list[dict[str, Any]]:
        """The orders among ``client_order_ids`` not yet terminal, in the order they arrived."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.OPEN_AMONG, (client_order_ids,))
            return list(await cur.fetchall())

    async def sellable(self, follower_wallet_id: str, asset_id: str,
                       subscription_id: str | None = None) -> Decimal | Refusal:
        """Shares of a position not already being sold: held, less what its SELLs under way may still sell (a
        SELL not sent yet, NEW, is sized again if it was sized before a restart); with ``subscription_id`` (a
        copy's), of that subscription's part of it when the position keeps a split, or why it holds none
        (``sell_sizing.copy_sellable``)."""
        params = {"w": follower_wallet_id, "a": asset_id, "s": subscription_id}
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.SELLABLE if subscription_id is None else sql.SELLABLE_PART, params)
            row = await cur.fetchone()
        if row is None:
            return ZERO
        if subscription_id is None:
            return Decimal(row["sellable"]) if row["sellable"] is not None else ZERO
        size, cost = row["size"] or ZERO, row["cost_usd"] or ZERO
        split = shares.kept_split(shares.decode(orjson.loads(row["shares"])), size, cost) if row["shares"] else None
        if split is None and not row["shares"] and row["origin"] == "MANUAL" and size > ZERO:
            split = {shares.NO_SUBSCRIPTION: shares.Part(size, cost)}  # bought by hand, none kept: no copy's shares
        if split is None:
            return copy_sellable(None, subscription_id, size, row["selling"], ZERO)
        parts = {k: p.shares for k, p in split.items()}
        copies = {k: Decimal(v) for k, v in orjson.loads(row["copies"]).items()} if row["copies"] else {}
        return copy_sellable(parts, subscription_id, size, row["selling"], others_own(parts, copies, subscription_id))

    async def set_size(self, client_order_id: str, size: Decimal, limit_price: Decimal, order_proto: bytes) -> None:
        """Record the size (and limit) a SELL sent with a fraction of the position got in its turn."""
        with self.fenced:
            async with self.pool.connection() as conn:
                # created_at too: a restart counts the resubmit window from the sizing, as the runner does
                await conn.execute("UPDATE orders SET size = %s, limit_price = %s, order_proto = %s,"
                                   " created_at = now(), updated_at = now()"
                                   " WHERE client_order_id = %s AND state = 'NEW'",
                                   (size, limit_price, order_proto, client_order_id))

    async def restamp(self, client_order_id: str) -> None:
        """The order starts now (it waited before its first POST): its resubmit window counts from now."""
        with self.fenced:
            async with self.pool.connection() as conn:
                await conn.execute("UPDATE orders SET created_at = now() WHERE client_order_id = %s",
                                   (client_order_id,))

    async def order_row(self, client_order_id: str) -> dict[str, Any] | None:
        """One order row."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM orders WHERE client_order_id = %s", (client_order_id,))
            return await cur.fetchone()

    async def last_event(self, client_order_id: str) -> epb.OrderEvent | None:
        """The latest OrderEvent of an order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT payload FROM order_events WHERE client_order_id = %s "
                                     "ORDER BY seq DESC LIMIT 1", (client_order_id,))
            row = await cur.fetchone()
        return epb.OrderEvent.FromString(row["payload"]) if row else None

    async def unpublished(self, min_age_s: float, limit: int = 5000) -> list[tuple[int, str, bytes]]:
        """Outbox events (seq, event id, payload) not recorded as appended to the stream, in emission order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.UNPUBLISHED_SQL, (min_age_s, limit))
            return [(r["seq"], r["event_id"], r["payload"]) for r in await cur.fetchall()]

    async def outbox_events(self, event_ids: list[str]) -> list[tuple[int, str, bytes]]:
        """The outbox events of ``event_ids`` still there (seq, event id, payload), in emission order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.OUTBOX_EVENTS, (event_ids,))
            return [(r["seq"], r["event_id"], r["payload"]) for r in await cur.fetchall()]

    async def known(self, client_order_ids: list[str]) -> set[str]:
        """Those of ``client_order_ids`` that have an order row."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT client_order_id FROM orders WHERE client_order_id = ANY(%s)",
                                     (client_order_ids,))
            return {r["client_order_id"] for r in await cur.fetchall()}

    async def unreleased(self, min_age_s: float, limit: int = 5000) -> list[str]:
        """Terminal orders whose reservation release is not recorded yet."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.UNRELEASED, (min_age_s, limit))
            return [r["client_order_id"] for r in await cur.fetchall()]

    async def last_ended(self, before: datetime, window_s: float) -> tuple[datetime | None, list[str]]:
        """The last order end at or before ``before`` (None: no order ever ended), and the orders that ended in
        the ``window_s`` seconds up to it whose reservation release is recorded as done."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.LAST_ENDED, {"before": before, "window": window_s})
            rows = await cur.fetchall()
        if not rows:
            return None, []
        return rows[0]["at"], list(dict.fromkeys(r["client_order_id"] for r in rows if r["client_order_id"]))

    async def mark_done(self, event_ids: list[str], released_ids: list[str]) -> None:
        """Record outbox events (by id) as appended and reservations as released, in one statement."""
        async with self.pool.connection() as conn:
            await conn.execute(sql.MARK_DONE, (event_ids, released_ids))


def row_life(row: dict[str, Any]) -> OrderLife:
    """The lifecycle state stored in an ``orders`` row."""
    return OrderLife(row["client_order_id"], State(row["state"]), row["venue_order_id"], row["venue_status"],
                     row["limit_price"], row["attempts"], row["not_found"], row["maybe_unsent"],
                     row["filled_size"] or ZERO, row["avg_price"] or ZERO, row["reason"], row["detail"],
                     row["post_uncertain"])


def ticket_from_row(row: dict[str, Any]) -> Ticket:
    """Rebuild a running order from its ``orders`` row."""
    order = epb.Order.FromString(row["order_proto"])
    request = None
    if row["limit_price"] is not None:
        request = v.PlaceRequest(
            client_order_id=order.client_order_id, user_id=order.follower_user_id,
            wallet_id=order.follower_wallet_id, proxy=order.follower_proxy, token_id=order.asset_id,
            side=row["side"], order_type=row["order_type"],
            amount_usd=Decimal(row["amount_usd"]) if row["amount_usd"] is not None else None,
            size=Decimal(row["size"]) if row["size"] is not None else None,
            limit_price=Decimal(row["limit_price"]), neg_risk=order.neg_risk)
    created_ns = int(row["created_at"].timestamp() * 1e9)
    return Ticket(order, row["venue"], request, created_ns, int(row["post_sent_ns"] or 0),
                  Decimal(row["fee_shares"] or 0), Decimal(row["filled_notional"] or 0), int(row["arrival_ns"] or 0))
