"""PostgreSQL adapter for triggers: start-up load, fire decisions, state changes, the event outbox.

Every state change is a conditional UPDATE (``WHERE state = …``), so PostgreSQL is the final word
when guard and control race: a trigger that is no longer ARMED is never fired, one that is no
longer FIRED is never settled twice. Every change writes its TriggerEvent to the outbox
``guard_trigger_events`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import DictRow, tuple_row
from psycopg_pool import AsyncConnectionPool

from common.decimals import ZERO
from common.storage import pipelined_transaction
from services.guard.adapters import trigger_sql as sql
from services.guard.domain.fire_records import FireDecision, FireFacts, FireResult, oco_siblings
from services.guard.domain.lost_refires import LostSell, candidate_ids
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import Move, Reason, State, TriggerSpec, apply
from services.guard.domain.trigger_rows import SPEC_COLUMNS, TriggerRow, event, spec_from_tuple
from tradingtools.guard.v1 import guard_pb2 as gpb

Clock = Callable[[], datetime]
Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


def dict_pool(pool: AsyncConnectionPool[Any]) -> Pool:
    """The pool typed with the dict rows ``common.storage.create_pool`` configures. Guard's pool is in
    autocommit: a statement that stands alone is one round trip (no BEGIN, no COMMIT, no transaction
    left open while the event loop is busy with ticks); statements that hold together use
    ``conn.transaction()``."""
    return cast(Pool, pool)


async def insert_events(conn: AsyncConnection[Any], events: Sequence[gpb.TriggerEvent]) -> None:
    """Write events to the outbox (a replayed event id is ignored)."""
    if not events:
        return
    if len(events) == 1:  # the usual case (a fire, a settle): executemany's set-up costs more than the row
        e = events[0]
        await conn.execute(_INSERT_EVENT, (e.event_id, e.trigger.id, e.SerializeToString()), prepare=True)
        return
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT_EVENT, [(e.event_id, e.trigger.id, e.SerializeToString()) for e in events])


_INSERT_EVENT = ("INSERT INTO guard_trigger_events (event_id, trigger_id, payload) VALUES (%s, %s, %s)"
                 " ON CONFLICT (event_id) DO NOTHING")


async def warm_fire_reads(conn: AsyncConnection[Any]) -> None:
    """Prepare the reads a fire makes before its SELL goes out, on a new connection, with an id no trigger has
    (nothing is locked or read). Without it, the first fires after a start paid a new backend's first look at
    each table and the unprepared runs of each statement on every pooled connection: in ``bench pipeline --only
    e`` the first 10 fires after guard's restart took 1.4-1.7 ms longer from the tick to the decision (median)
    than the fires from the 100th on, and 0.8-0.9 ms longer with it."""
    async with conn.pipeline():  # the four prepares and runs in one round trip
        await conn.execute(sql.LOCK_POSITION, ("",), prepare=True)
        await conn.execute(sql.LOCK_GROUP, ("",), prepare=True)
        await conn.execute(sql.LOCK_ROWS, ([""], ""), prepare=True)
        await conn.execute(sql.FACTS, ([], ""), prepare=True)


class TriggerStore:
    """Trigger rows in PostgreSQL."""

    def __init__(self, pool: AsyncConnectionPool[Any], clock: Clock) -> None:
        self.pool = dict_pool(pool)
        self.clock = clock

    async def load_armed(self) -> list[TriggerSpec]:
        """Every ARMED trigger as an engine spec (the start-up load)."""
        specs: list[TriggerSpec] = []
        # a server-side cursor read in chunks: the rows never sit in memory all at once next to the specs
        async with self.pool.connection() as conn, conn.transaction(), \
                conn.cursor("guard_load_armed", row_factory=tuple_row) as cur:
            await conn.execute("SET LOCAL enable_seqscan = on")  # every ARMED row: the one read that wants a scan
            await cur.execute(f"SELECT {', '.join(SPEC_COLUMNS)} FROM triggers WHERE state = 'ARMED'")
            while rows := await cur.fetchmany(10_000):
                specs.extend(spec_from_tuple(r) for r in rows)
        return specs

    async def held_ids(self) -> list[str]:
        """ARMED triggers recorded as held on a stale book (by this process before a restart, or an earlier one)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id FROM triggers WHERE state = 'ARMED' AND state_reason = %s",
                (Reason.BOOK_STALE.value,))).fetchall()
        return [r["id"] for r in rows]

    async def get(self, trigger_id: str) -> TriggerRow | None:
        """One trigger."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT * FROM triggers WHERE id = %s", (trigger_id,))).fetchone()
        return None if row is None else TriggerRow.from_row(row)

    async def fire(self, trigger_id: str, siblings: Sequence[str], mark: Decimal, tick: TickInfo,
                   decide: Callable[[TriggerRow, FireFacts], FireDecision],
                   on_decided: Callable[[FireDecision], object] | None = None,
                   before_decide: Awaitable[object] | None = None) -> FireResult:
        """Record a fire decision and, when it sends a SELL, cancel the OCO siblings, in one transaction.

        The siblings cancelled are those the engine passed (``siblings``) and, when the trigger closes its
        position's exits, every ARMED member of its OCO group on its position (wallet, follower wallet, asset) as
        PostgreSQL has them, the engine's or not (:func:`~services.guard.domain.fire_records.oco_siblings`); they
        are returned in :attr:`FireResult.cancelled`.

        The position is locked (advisory lock on wallet + asset) so concurrent fires on one position
        size against each other's in-flight SELLs; ``decide`` turns the locked row and the position
        facts into what is recorded. ``before_decide``: a read the caller started beside this one, awaited
        before ``decide`` runs. ``on_decided`` runs as soon as the decision is made, the lock
        still held, before the writes and the commit (the caller starts sending the SELL there).

        Every lock the transaction needs (the OCO group's, control's lock of a create joining it, then the
        trigger and its OCO siblings, in id order, as control locks a subscription's triggers) is taken in the
        first round trip, before ``on_decided`` starts the SELL: nothing after that can wait on a lock (only rows
        locked then are cancelled), so no deadlock can abort a fire whose SELL is out.

        Two round trips in all: BEGIN + locks + reads, then the writes + COMMIT (pipeline mode).
        """
        now = self.clock()
        async with self.pool.connection() as conn, pipelined_transaction(conn):
            # One round trip: lock the position (wallet + asset never change), then the OCO group, then the rows,
            # then read what the size depends on. Statements run in order, so every fire locks in the same order.
            await conn.execute(sql.LOCK_POSITION, (trigger_id,), prepare=True)
            await conn.execute(sql.LOCK_GROUP, (trigger_id,), prepare=True)
            locked_cur = await conn.execute(sql.LOCK_ROWS, (sorted({trigger_id, *siblings}), trigger_id),
                                            prepare=True)
            facts_cur = await conn.execute(sql.FACTS, (candidate_ids(trigger_id), trigger_id), prepare=True)
            locked_rows = [TriggerRow.from_row(r) for r in await locked_cur.fetchall()]
            row = next((r for r in locked_rows if r.id == trigger_id), None)
            facts_row = await facts_cur.fetchone()
            if row is None or facts_row is None:
                return FireResult(None, None, (), None)
            if row.state is not State.ARMED:
                return FireResult(None, None, (), row.state)
            facts = FireFacts(held=facts_row["held"] or ZERO, in_flight=facts_row["in_flight"] or ZERO,
                              condition_id=facts_row["cond"] or "", follower_user_id=facts_row["user_id"] or "",
                              mode_paper=facts_row["mode"] == "PAPER", resolved=bool(facts_row["resolved"]),
                              lost=_lost_sells(facts_row))
            if before_decide is not None:
                await before_decide
            decision = decide(row, facts)
            if decision.state is State.ARMED:  # deferred: nothing is recorded, the trigger stays ARMED
                return FireResult(None, decision, (), State.ARMED)
            if on_decided is not None:
                on_decided(decision)
            move = Move.FIRE if decision.state is State.FIRED else (
                Move.CANCEL if decision.state is State.CANCELLED else Move.FAIL)
            apply(row.state, move)
            inc = 1 if decision.state is State.FIRED else 0
            after = replace(row, state=decision.state, state_reason=decision.reason, fire_count=row.fire_count + inc,
                            order_id=decision.order_id, fired_time=now, update_time=now, version=row.version + 1,
                            high_water_mark=max(row.high_water_mark, mark), fire_price=tick.price or ZERO,
                            fire_size=decision.size, fire_order=decision.order)
            kind = {State.FIRED: "FIRED", State.CANCELLED: "CANCELLED", State.FAILED: "FAILED"}[decision.state]
            events = [event(after, kind, reason=decision.reason, price=tick.price, venue_time_ms=tick.venue_time_ms,
                            received_time_ns=tick.received_time_ns)]
            # Every write in one round trip with the COMMIT (the fired row is locked: its after-image is known).
            # Siblings are cancelled only by a SELL sent: a fire that sells nothing leaves them guarding the position.
            cancel_ids = oco_siblings(row, locked_rows, siblings) if inc else []
            sib_cur = await conn.execute(
                sql.CANCEL_SIBLINGS, (Reason.OCO_SIBLING_FIRED.value, now, cancel_ids),
                prepare=True) if cancel_ids else None
            await conn.execute(
                sql.RECORD_FIRE,
                {"state": decision.state.value, "reason": decision.reason, "inc": inc,
                 "order_id": decision.order_id, "now": now, "price": tick.price or ZERO, "size": decision.size,
                 "held": decision.held, "order": decision.order, "mark": mark, "id": trigger_id}, prepare=True)
            cancelled = sorted((TriggerRow.from_row(r) for r in await sib_cur.fetchall()),
                               key=lambda r: r.id) if sib_cur is not None else []
            events += [event(c, "CANCELLED", reason=c.state_reason, price=tick.price,
                             venue_time_ms=tick.venue_time_ms, received_time_ns=tick.received_time_ns)
                       for c in cancelled]
            await insert_events(conn, events)
        return FireResult(after, decision, tuple(cancelled), after.state)

    async def mark_submitted(self, items: Sequence[tuple[str, str]]) -> None:
        """The executor has these SELLs ((trigger id, order id)): no re-submit needed at the next start-up."""
        if not items:
            return
        async with self.pool.connection() as conn:
            await conn.execute(sql.SUBMITTED, ([i for i, _o in items], [o for _i, o in items], self.clock()))

    async def unsubmitted(self) -> list[TriggerRow]:
        """FIRED triggers whose SELL the executor may not have (crash between decision and submit)."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT * FROM triggers WHERE state = 'FIRED' AND submitted_at IS NULL ORDER BY fired_time")).fetchall()
        return [TriggerRow.from_row(r) for r in rows]

    async def get_many(self, trigger_ids: Iterable[str], *, chunk: int = 1000) -> dict[str, TriggerRow]:
        """Several triggers by id, ``chunk`` ids per statement (those not found are left out)."""
        ids = sorted(set(trigger_ids))
        found: dict[str, TriggerRow] = {}
        async with self.pool.connection() as conn:
            for start in range(0, len(ids), chunk):
                rows = await (await conn.execute("SELECT * FROM triggers WHERE id = ANY(%s)",
                                                 (ids[start:start + chunk],))).fetchall()
                found.update((r["id"], TriggerRow.from_row(r)) for r in rows)
        return found

    async def ordered(self, order_ids: Sequence[str]) -> set[str]:
        """Those of ``order_ids`` the executor has an order of."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(sql.ORDERED, (list(order_ids),))).fetchall()
        return {r["client_order_id"] for r in rows}

    async def find_by_order(self, trigger_id: str, order_id: str) -> TriggerRow | None:
        """The trigger that sent ``order_id``."""
        async with self.pool.connection() as conn:
            if trigger_id:
                row = await (await conn.execute("SELECT * FROM triggers WHERE id = %s AND order_id = %s",
                                                (trigger_id, order_id))).fetchone()
            else:
                row = await (await conn.execute("SELECT * FROM triggers WHERE order_id = %s AND order_id <> ''",
                                                (order_id,))).fetchone()
        return None if row is None else TriggerRow.from_row(row)

    async def settle(self, trigger_id: str, order_id: str, move: Move | None, reason: str, filled: Decimal,
                     avg_price: Decimal) -> TriggerRow | None:
        """Apply an order event to a FIRED trigger: DONE / FAILED, or just the fill so far; None when not FIRED."""
        now = self.clock()
        # Pipeline mode: BEGIN and the UPDATE go in one round trip, the event INSERT with the COMMIT in another.
        async with self.pool.connection() as conn, pipelined_transaction(conn):
            if move is None:
                await conn.execute(sql.FILLED_SO_FAR, (filled, avg_price, trigger_id, order_id))
                return None
            target = apply(State.FIRED, move)
            updated = await (await conn.execute(sql.SETTLE, (target.value, reason, filled, avg_price, now, now, now,
                                                              trigger_id, order_id))).fetchone()
            if updated is None:
                return None
            row = TriggerRow.from_row(updated)
            await insert_events(conn, [event(row, "DONE" if target is State.DONE else "FAILED", reason=reason,
                                             price=avg_price if avg_price > 0 else None)])
        return row

    async def settle_many(self, items: Sequence[tuple[str, str, Move | None, str, Decimal, Decimal]]
                          ) -> list[TriggerRow | None]:
        """:meth:`settle` for several order events (trigger id, order id, move, reason, filled, average price),
        in one transaction of two round trips: the triggers locked first in key order (:data:`sql.LOCK_IDS`, as the
        other writers of several triggers take them), then the same statements, queued together (each trigger's in
        their order); the rows come back in ``items``' order."""
        if not items:
            return []
        now = self.clock()
        async with self.pool.connection() as conn, pipelined_transaction(conn):
            await conn.execute(sql.LOCK_IDS, (sorted({item[0] for item in items}),))
            curs: list[tuple[Any, State] | None] = [None] * len(items)
            for i in sorted(range(len(items)), key=lambda k: items[k][0]):
                trigger_id, order_id, move, reason, filled, avg_price = items[i]
                if move is None:
                    await conn.execute(sql.FILLED_SO_FAR, (filled, avg_price, trigger_id, order_id))
                    continue
                target = apply(State.FIRED, move)
                curs[i] = (await conn.execute(sql.SETTLE, (target.value, reason, filled, avg_price, now, now, now,
                                                            trigger_id, order_id)), target)
            out: list[TriggerRow | None] = []
            events = []
            for queued, (_tid, _oid, _move, reason, _filled, avg_price) in zip(curs, items, strict=True):
                updated = await queued[0].fetchone() if queued is not None else None
                if queued is None or updated is None:
                    out.append(None)
                    continue
                row = TriggerRow.from_row(updated)
                out.append(row)
                events.append(event(row, "DONE" if queued[1] is State.DONE else "FAILED", reason=reason,
                                    price=avg_price if avg_price > 0 else None))
            await insert_events(conn, events)
        return out

    async def cancel(self, trigger_ids: Iterable[str], reason: str, tick: TickInfo | None = None) -> list[TriggerRow]:
        """Cancel ARMED triggers (those not ARMED any more are left alone); returns the cancelled rows."""
        ids = sorted(set(trigger_ids))
        if not ids:
            return []
        async with self.pool.connection() as conn, conn.transaction():
            rows = await self._cancel(conn, ids, reason, self.clock())
            tick = tick or TickInfo()
            await insert_events(conn, [event(r, "CANCELLED", reason=reason, price=tick.price,
                                             venue_time_ms=tick.venue_time_ms,
                                             received_time_ns=tick.received_time_ns) for r in rows])
        return rows

    async def cancel_assets(self, asset_ids: Iterable[str], reason: str, tick: TickInfo) -> list[TriggerRow]:
        """Cancel every ARMED trigger on these assets (market resolution)."""
        assets = sorted(set(asset_ids))
        async with self.pool.connection() as conn:
            rows = await (await conn.execute("SELECT id FROM triggers WHERE asset_id = ANY(%s) AND state = 'ARMED'",
                                             (assets,))).fetchall()
        return await self.cancel([r["id"] for r in rows], reason, tick)

    async def set_hold(self, trigger_ids: Sequence[str], held: bool, tick: TickInfo) -> list[TriggerRow]:
        """Mark ARMED triggers held by a stale book (state_reason BOOK_STALE, HELD_STALE event) or release them."""
        if not trigger_ids:
            return []
        now = self.clock()
        async with self.pool.connection() as conn, conn.transaction():
            statement = sql.HOLD if held else sql.RELEASE
            rows = [TriggerRow.from_row(r) for r in
                    await (await conn.execute(statement, (list(trigger_ids), now))).fetchall()]
            kind, reason = ("HELD_STALE", Reason.BOOK_STALE.value) if held else ("UPDATED", Reason.BOOK_FRESH.value)
            await insert_events(conn, [event(r, kind, reason=reason, price=tick.price,
                                             venue_time_ms=tick.venue_time_ms,
                                             received_time_ns=tick.received_time_ns) for r in rows])
        return rows

    async def set_holds(self, changes: Sequence[tuple[Sequence[str], bool, TickInfo]]) -> int:
        """Several :meth:`set_hold` changes, in order, in one transaction and one round trip; returns rows changed."""
        changes = [c for c in changes if c[0]]
        if not changes:
            return 0
        now = self.clock()
        changed = 0
        async with self.pool.connection() as conn, pipelined_transaction(conn):
            curs = [await conn.execute(sql.HOLD if held else sql.RELEASE, (list(ids), now))
                    for ids, held, _tick in changes]
            events = []
            for cur, (_ids, held, tick) in zip(curs, changes, strict=True):
                kind, reason = ("HELD_STALE", Reason.BOOK_STALE.value) if held else ("UPDATED", Reason.BOOK_FRESH.value)
                for r in await cur.fetchall():
                    changed += 1
                    events.append(event(TriggerRow.from_row(r), kind, reason=reason, price=tick.price,
                                        venue_time_ms=tick.venue_time_ms, received_time_ns=tick.received_time_ns))
            await insert_events(conn, events)
        return changed

    async def save_marks(self, marks: Sequence[tuple[Decimal, list[str]]], *, chunk: int = 500) -> None:
        """Persist trailing high-water marks (never lowered), ``chunk`` rows per statement, each statement its
        own transaction: a fire waiting for one of those rows' lock waits for one small statement, not for
        thousands of rows. A mark below the row's activation price is not written: it was taken before a PATCH
        raised the activation price above it and reset the mark (the condition is checked again on the row as
        that PATCH committed it, when the statement waited for its lock)."""
        pairs = sorted((tid, m) for m, group in marks for tid in group)
        if not pairs:
            return
        async with self.pool.connection() as conn:
            for start in range(0, len(pairs), chunk):
                part = pairs[start:start + chunk]
                await conn.execute(sql.MARKS, ([tid for tid, _m in part], [m for _tid, m in part]))

    async def record_observed(self, row: TriggerRow, kind: str, reason: str) -> None:
        """Write the event of a change another service made (control's create / PATCH / DELETE)."""
        async with self.pool.connection() as conn:
            await insert_events(conn, [event(row, kind, reason=reason)])

    @staticmethod
    async def _cancel(conn: AsyncConnection[Any], ids: Sequence[str], reason: str, now: datetime) -> list[TriggerRow]:
        if not ids:
            return []
        rows = await (await conn.execute(sql.CANCEL, (list(ids), reason, now))).fetchall()
        return sorted((TriggerRow.from_row(r) for r in rows), key=lambda r: r.id)


def _lost_sells(facts: dict[str, Any]) -> dict[str, LostSell]:
    """The fire's own SELLs that ended LOST (``sql.LOST``), by client order id."""
    return {oid: LostSell(bool(selling), sold or ZERO) for oid, selling, sold in zip(
        facts["lost_ids"] or (), facts["lost_selling"] or (), facts["lost_sold_since"] or (), strict=True)}
