"""Turns routed trades (and single submitted orders) into running orders, as fast as the first is ready.

Orders are prepared and their intents inserted in growing chunks (8, 32, 128, 512, …): the first
POSTs leave after one small INSERT; the later chunks are inserted side by side, each chunk's orders
starting as soon as its INSERT commits. An intent that already
exists (a replayed routed trade, a repeated SubmitOrder) is never sent again: its stored order is
resumed instead when this process is not already running it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from common.marketstate import BookSnapshot, read_book
from services.executor.engine import Engine
from services.executor.intake import IntakeRules, Prepared, QuoteCache, ShapeCache, prepare
from services.executor.store import Store
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)

FIRST_CHUNK = 8
CHUNK_GROWTH = 4
MAX_CHUNK = 512

BookReader = Callable[[str], Awaitable[BookSnapshot | None]]


class Fanout:
    """Admits orders: prepare, persist the intent, start (or resume) the runner."""

    def __init__(self, engine: Engine, store: Store, redis: Any, rules: IntakeRules, *,
                 intent_retry_s: float = 30.0) -> None:
        self.engine = engine
        self.store = store
        self.redis = redis
        self.rules = rules
        self.intent_retry_s = intent_retry_s
        self.handled_trades = 0
        self.admitted = 0
        self.refused = 0
        self.duplicates = 0

    async def _book(self, asset_id: str) -> BookSnapshot | None:
        try:
            return await read_book(self.redis, asset_id)
        except Exception as exc:  # noqa: BLE001 - a live order can go without the book (limit from reference)
            log.warning("book unreadable", extra={"asset_id": asset_id, "error": repr(exc)[:200]})
            return None

    async def handle(self, routed: epb.RoutedTrade) -> None:
        """Admit every order of one routed trade; returns once all intents are persisted.

        The whole trade counts as pending and unsent in the engine's burst gate from the start (each
        chunk hands its share over as its orders start), so venue answers to the first chunks stay
        unread (and their work waits) while later chunks are still being inserted and written, instead
        of competing with them for the CPU and PostgreSQL.
        """
        orders = routed.orders
        books: dict[str, BookSnapshot | None] = {}
        quotes: QuoteCache = {}
        shapes: ShapeCache = {}  # followers' orders alike are validated and priced once
        i, size = 0, FIRST_CHUNK
        later: list[asyncio.Task[set[str]]] = []
        burst = self.engine.burst
        held = len(orders)  # burst slots not yet handed to a chunk
        burst.add(held)
        try:
            while i < len(orders):
                chunk = orders[i:i + size]
                first = i == 0
                i += size
                size = min(size * CHUNK_GROWTH, MAX_CHUNK)
                for asset in {o.asset_id for o in chunk} - books.keys():
                    books[asset] = await self._book(asset)
                now = time.time_ns()
                prepared = [prepare(o, books.get(o.asset_id), self.rules, now, quotes, shapes) for o in chunk]
                held -= len(chunk)
                if first:  # the first POSTs leave after one small insert
                    await self._admit_chunk(prepared)
                else:  # the other chunks insert side by side (disjoint orders), each starting as it commits
                    later.append(asyncio.create_task(self._admit_chunk(prepared)))
                    await asyncio.sleep(0)
        finally:
            burst.give_back(held)
        if later:
            await asyncio.gather(*later)
        self.handled_trades += 1

    async def _admit_chunk(self, prepared: list[Prepared]) -> set[str]:
        """:meth:`admit`, then give back the chunk's burst slots (its started orders hold their own)."""
        try:
            return await self.admit(prepared)
        finally:
            self.engine.burst.give_back(len(prepared))

    async def submit(self, order: epb.Order) -> tuple[bool, Prepared]:
        """Admit one order (SubmitOrder); returns whether its client order id was known already."""
        p = prepare(order, await self._book(order.asset_id), self.rules, time.time_ns())
        new = await self.admit([p], notify=True)
        return p.ticket.client_order_id not in new, p

    async def admit(self, prepared: Sequence[Prepared], *, notify: bool = False) -> set[str]:
        """Persist intents, start the new ones, resume known ones; returns the ids that were new."""
        gos = [p for p in prepared if not p.refused and not self.engine.running(p.ticket.client_order_id)]
        inserted = await self._insert_intents(gos)
        for p in gos:
            if p.ticket.client_order_id in inserted:
                self.engine.start(p.ticket, p.life, notify=notify)
        refused = [p for p in prepared if p.refused and not self.engine.running(p.ticket.client_order_id)]
        new_refused = await self.engine.refuse([(p.ticket, p.life) for p in refused])
        known = [p.ticket.client_order_id for p in [*gos, *refused]
                 if p.ticket.client_order_id not in inserted and p.ticket.client_order_id not in new_refused]
        if known:
            self.duplicates += len(known)
            await self._resume_known(known)
        self.admitted += len(inserted)
        self.refused += len(new_refused)
        return inserted | new_refused

    async def _insert_intents(self, gos: list[Prepared]) -> set[str]:
        if not gos:
            return set()
        deadline = time.monotonic() + self.intent_retry_s
        delay = 0.05
        while True:
            try:
                return await self.store.insert_intents([(p.ticket, p.life) for p in gos])
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("intent insert failed; retrying", extra={"error": repr(exc)[:300]})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _resume_known(self, ids: list[str]) -> None:
        rows = []
        for coid in dict.fromkeys(ids):
            if self.engine.running(coid):
                continue
            row = await self.store.order_row(coid)
            if row is not None:
                rows.append(row)
        if rows:
            await self.engine.resume(rows)
