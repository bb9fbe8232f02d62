"""Turns routed trades (and single submitted orders) into running orders, as fast as the first is ready.

Routed trades that arrived together (the consumer's batches) are admitted as one set of orders: one
book read per asset, one intent INSERT for the first chunk (single-order trades on an unchanged book
are priced from a memo kept with the parsed book).

Orders are prepared and their intents inserted in growing chunks (8, 32, 128, 512, …): the first
POSTs leave after one small INSERT; the later chunks are inserted side by side, each chunk's orders
starting as soon as its INSERT commits. A later part of a split fan-out (``RoutedTrade.part`` > 0: the
trade's first POSTs are out already) goes in chunks of 512 from the start, none of them waited for. An
intent that already exists (a replayed routed trade, a repeated SubmitOrder) is never sent again: its
stored order is resumed instead when this process is not already running it. The INSERT also refuses an order of a
wallet that is now in the other execution mode, or that holds the order's token in the other venue: it ends REJECTED
(``MODE_CHANGED``, ``POSITION_IN_OTHER_VENUE``), and a copy BUY of a subscription now paused or stopped
(``SUBSCRIPTION_INACTIVE``; :data:`.adapters.order_store.ADMIT_INTENTS`).

A routed trade waits for room first (``max_open``): while that many orders are open here (running, or placed
and polled until final), the next trade stays in the routed log. The backlog an outage leaves is then read as fast
as its orders end, not admitted into memory all at once (an open order holds a few KB until it is final). A
trigger's SELL (SubmitOrder) never waits for room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import psycopg
from opentelemetry import metrics

from common import reservations
from common.ceiling import MAX_ORDER_USD, SHARE_STEP, cap_sell
from common.decimals import ZERO, fmt, parse_decimal
from common.marketstate import BookSnapshot
from services.executor.adapters.book_reader import FreshBooks
from services.executor.adapters.order_store import Inserted, OrderStore
from services.executor.domain.order_intake import IntakeRules, Prepared, QuoteCache, ShapeCache, prepare
from services.executor.domain.order_lifecycle import TERMINAL, OrderLife, OrderRejected, apply
from services.executor.domain.sell_sizing import ceiling_price, fraction_size, sized_on
from services.executor.domain.ticket import Ticket
from services.executor.order_runner import OrderRunner
from services.executor.releases import Repairs
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)
_METER = metrics.get_meter("tradingtools.executor")
_ROOM_WAITS = _METER.create_counter(
    "executor.admission_waits", description="Routed trades that waited for open orders to end first")
_ROOM_TIMEOUTS = _METER.create_counter(
    "executor.admission_wait_timeouts", description="Of those, waits that ran out: the trade was admitted anyway")
_CONDITION_REPLACED = _METER.create_counter(
    "executor.condition_id_replaced",
    description="Orders that named another market than the one their token's book names: they took the book's, "
                "by origin")

FIRST_CHUNK = 8
ONE_CHUNK_MAX = 32  # up to this many orders go in one INSERT: a second one only adds a commit and a wait
CHUNK_GROWTH = 4
MAX_CHUNK = 512
PARSED_BOOKS_MAX = 4096
MEMO_MAX = 4096
MAX_BATCH_ORDERS = 1024  # routed trades admitted together hold at most this many orders
ROOM_POLL_S = 0.02  # how often a routed trade waiting for room looks again
_TERMINAL = frozenset(s.value for s in TERMINAL)

BookReader = Callable[[str], Awaitable[BookSnapshot | None]]


class OrderAdmission:
    """Admits orders: prepare, persist the intent, start (or resume) the runner."""

    def __init__(self, runner: OrderRunner, store: OrderStore, redis: Any, rules: IntakeRules, *,
                 intent_retry_s: float = 30.0, books: FreshBooks | None = None, max_open: int = 0,
                 room_wait_s: float = 10.0, repairs: Repairs | None = None) -> None:
        self.runner = runner
        self.repairs = repairs  # the journal's: orphans whose reservations it released (see _restore_orphans)
        self.max_open = max_open  # > 0: routed trades wait for room (see the module docstring)
        self.room_wait_s = room_wait_s
        self.room_waits = 0
        self.room_timeouts = 0
        self.store = store
        self.redis = redis
        self.rules = rules
        self.books = books or FreshBooks(redis)
        self.intent_retry_s = intent_retry_s
        self.handled_trades = 0
        self.admitted = 0
        self.refused = 0
        self.duplicates = 0
        # asset → (parsed book, memos of prepare() for that very book object)
        self._parsed: dict[str, tuple[BookSnapshot, QuoteCache, ShapeCache]] = {}
        runner.size_later = self.size_later
        self._last_arrival_ns = 0
        self._placed: set[str] = set()  # orders given their queue places before their chunk started

    def _arrival(self) -> int:
        """The next arrival number: the clock in ns, strictly increasing (orders of a batch in stream order)."""
        self._last_arrival_ns = max(time.time_ns(), self._last_arrival_ns + 1)
        return self._last_arrival_ns

    async def size_later(self, t: Ticket) -> Prepared:
        """A SELL sent with the fraction of the position to sell, sized now (its turn came: the wallet's earlier
        orders on the asset are final): ready for the venue with its intent row updated, or refused."""
        o = t.order
        # a copy sells of its own subscription's part when the position keeps a split, else of the wallet's shares
        held = await self.store.sellable(o.follower_wallet_id, o.asset_id, sized_on(t.origin, o.subscription_id))
        try:
            min_size = parse_decimal(o.min_order_size) if o.min_order_size else ZERO
            sized = held if isinstance(held, tuple) else fraction_size(held, parse_decimal(o.sell_fraction), min_size)
        except (ValueError, ArithmeticError) as exc:  # checked at intake; a stored row may still be bad
            sized = ("INVALID_ORDER", f"cannot size the SELL: {exc!r}"[:300])
        if isinstance(sized, tuple):
            return Prepared(t, apply(OrderLife(o.client_order_id), OrderRejected(*sized)))
        book = await self._book(o.asset_id)
        # held to the operator ceiling, as the router holds a sized SELL
        sized, note = cap_sell(sized, ceiling_price(o.reference_price, book.best_bid if book is not None else None),
                               self.rules.max_order_usd)
        if note and sized < max(min_size, SHARE_STEP):
            refusal = OrderRejected(MAX_ORDER_USD, f"{note}, below the market minimum {fmt(min_size)}")
            return Prepared(t, apply(OrderLife(o.client_order_id), refusal))
        order = epb.Order()
        order.CopyFrom(o)
        order.size = fmt(sized)
        order.sizing_note = note
        now = time.time_ns()
        order.routed_time_ns = now  # its age counts from now: waiting for the BUY must not make the exit stale
        p = prepare(order, book, self.rules, now, market=self._market(o.asset_id, book))
        _note_replaced([p])
        p.ticket.created_ns = now  # the resubmit window and the breaker wait count from now, not from the wait
        p.ticket.arrival_ns = t.arrival_ns
        if not p.refused and p.life.limit_price is not None:
            await self.store.set_size(o.client_order_id, sized, p.life.limit_price, order.SerializeToString())
            try:  # the router's next SELL of the position must see these shares as being sold
                await reservations.size_claim(self.redis, o.client_order_id, reservations.to_micro(sized))
            except Exception as exc:  # noqa: BLE001 - the venue still refuses shares not held
                log.warning("reserving a sized SELL's shares failed",
                            extra={"client_order_id": o.client_order_id, "error": repr(exc)[:200]})
        return p

    async def _book(self, asset_id: str) -> BookSnapshot | None:
        """The asset's book as stored now when fresh (read every time; ``FreshBooks`` parses it again only when
        the stored form changed, and waits a bounded time for a stale one's resync), else None."""
        book = await self.books.read(asset_id)
        if book is None:
            self._parsed.pop(asset_id, None)
            return None
        known = self._parsed.get(asset_id)
        if known is None or known[0] is not book:
            if len(self._parsed) >= PARSED_BOOKS_MAX:
                self._parsed.clear()
            self._parsed[asset_id] = (book, {}, {})
        return book

    def _market(self, asset_id: str, book: BookSnapshot | None) -> str:
        """The token's market as known without a fresh book (a stale stored book names it too), for intake to take
        the market's condition id from (no round trip)."""
        return self.books.market(asset_id) if book is None else ""

    def _memos(self, book: BookSnapshot | None, batch: tuple[QuoteCache, ShapeCache]) -> tuple[QuoteCache, ShapeCache]:
        """prepare()'s memos for orders priced on ``book``: kept with the parsed book while it is the
        stored one (single-order trades on an unchanged book are priced once), else the batch's own."""
        if book is not None:
            known = self._parsed.get(book.asset_id)
            if known is not None and known[0] is book:
                if len(known[2]) > MEMO_MAX:
                    known[1].clear()
                    known[2].clear()
                return known[1], known[2]
        return batch

    async def handle(self, routed: epb.RoutedTrade) -> None:
        """Admit every order of one routed trade; returns once all intents are persisted."""
        await self._room()
        await self._handle_orders(routed.orders, continued=routed.part > 0)
        self.handled_trades += 1

    def open_orders(self) -> int:
        """Orders open here: running, or placed and polled until final."""
        return len(self.runner.tasks) + len(self.runner.tracker)

    async def _room(self) -> None:
        """Wait while ``max_open`` orders or more are open here, at most ``room_wait_s``."""
        if self.max_open <= 0 or self.open_orders() < self.max_open:
            return
        self.room_waits += 1
        _ROOM_WAITS.add(1)
        deadline = time.monotonic() + self.room_wait_s
        while self.open_orders() >= self.max_open:
            if time.monotonic() >= deadline:
                self.room_timeouts += 1
                _ROOM_TIMEOUTS.add(1)
                log.warning("admitting routed orders beyond the open-order bound: the open orders did not end",
                            extra={"open_orders": self.open_orders(), "max_open": self.max_open,
                                   "waited_s": self.room_wait_s})
                return
            await asyncio.sleep(ROOM_POLL_S)

    async def handle_batch(self, trades: list[epb.RoutedTrade]) -> None:
        """Admit the orders of several routed trades (in stream order) as if they were one trade: one
        book read per asset, one intent INSERT for the first chunk of orders. Safe to re-run trade by
        trade after a failure: a persisted intent is resumed, never sent again."""
        if len(trades) == 1:
            await self.handle(trades[0])
            return
        group: list[epb.Order] = []
        continued = False  # the group is a later part of a split trade, alone
        for rt in trades:  # groups of at most MAX_BATCH_ORDERS (a bigger trade is a group of its own)
            if group and len(group) + len(rt.orders) > MAX_BATCH_ORDERS:
                await self._room()
                await self._handle_orders(group, continued=continued)
                group = []
            continued = not group and rt.part > 0
            group.extend(rt.orders)
        if group:
            await self._room()
            await self._handle_orders(group, continued=continued)
        self.handled_trades += len(trades)

    async def _books(self, assets: set[str], books: dict[str, BookSnapshot | None]) -> None:
        """Read the books of ``assets`` into ``books`` (side by side: they share the connection's round trip)."""
        if len(assets) == 1:
            (asset,) = assets
            books[asset] = await self._book(asset)
        elif assets:
            ordered = list(assets)
            for asset, book in zip(ordered, await asyncio.gather(*(self._book(a) for a in ordered)), strict=True):
                books[asset] = book

    async def _handle_orders(self, orders: Sequence[epb.Order], *, continued: bool = False) -> None:
        """:meth:`_admit_orders`; with a SELL sized later among them, every order takes its place in its
        position's queue in stream order first (chunks start their orders as each INSERT commits, not in
        order: the SELL must still wait for a BUY of its position in an earlier, slower chunk)."""
        if any(o.sell_fraction for o in orders):
            queue = self.runner.positions
            for o in orders:
                queue.opened((o.follower_wallet_id, o.asset_id), o.client_order_id,
                             sized_later=bool(o.sell_fraction and not o.size))
                self._placed.add(o.client_order_id)
        # On failure the places stay: the consumer hands the same orders in again (an order keeps its place),
        # or dead-letters them (:meth:`forget`).
        await self._admit_orders(orders, continued=continued)
        if self._placed:
            self.forget(orders)

    def forget(self, orders: Iterable[epb.Order]) -> None:
        """Give back the queue places taken in advance by ``orders`` that do not run here (refused, known and
        final, or dead-lettered): nothing waits behind them any more."""
        for o in orders:
            if o.client_order_id in self._placed:
                self._placed.discard(o.client_order_id)
                if not self.runner.running(o.client_order_id):
                    self.runner.positions.ended((o.follower_wallet_id, o.asset_id), o.client_order_id)

    async def _admit_orders(self, orders: Sequence[epb.Order], *, continued: bool = False) -> None:
        """Prepare, persist and start ``orders`` in growing chunks (``continued``, a later part of a split trade:
        in chunks of ``MAX_CHUNK``, the first one not waited for either).

        The whole set counts as pending and unsent in the runner's burst gate from the start (each
        chunk hands its share over as its orders start), so venue answers to the first chunks stay
        unread (and their work waits) while later chunks are still being inserted and written, instead
        of competing with them for the CPU and PostgreSQL.
        """
        books: dict[str, BookSnapshot | None] = {}
        batch_memos: tuple[QuoteCache, ShapeCache] = ({}, {})  # followers' orders alike are priced once
        i, size = 0, (len(orders) if len(orders) <= ONE_CHUNK_MAX else MAX_CHUNK if continued else FIRST_CHUNK)
        later: list[asyncio.Task[set[str]]] = []
        burst = self.runner.burst
        held = len(orders)  # burst slots not yet handed to a chunk
        burst.add(held)
        try:
            while i < len(orders):
                chunk = orders[i:i + size]
                first = i == 0 and not continued
                i += size
                size = min(size * CHUNK_GROWTH, MAX_CHUNK)
                await self._books({o.asset_id for o in chunk} - books.keys(), books)
                now = time.time_ns()
                prepared = []
                for o in chunk:
                    book = books.get(o.asset_id)
                    q, sh = self._memos(book, batch_memos)
                    p = prepare(o, book, self.rules, now, q, sh, market=self._market(o.asset_id, book))
                    p.ticket.arrival_ns = self._arrival()
                    prepared.append(p)
                _note_replaced(prepared)
                held -= len(chunk)
                if first:  # the first POSTs leave after one small insert
                    await self._admit_chunk(prepared)
                else:  # the other chunks insert side by side (disjoint orders), each starting as it commits
                    later.append(asyncio.create_task(self._admit_chunk(prepared)))
                    await asyncio.sleep(0)
        finally:
            burst.give_back(held)
        if later:  # every chunk settles before a failure is raised (the retry finds them all done)
            for result in await asyncio.gather(*later, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result

    async def _admit_chunk(self, prepared: list[Prepared]) -> set[str]:
        """:meth:`admit`, then give back the chunk's burst slots (its started orders hold their own)."""
        try:
            return await self.admit(prepared)
        finally:
            self.runner.burst.give_back(len(prepared))

    async def submit(self, order: epb.Order) -> tuple[bool, Prepared]:
        """Admit one order (SubmitOrder); returns whether its client order id was known already."""
        book = await self._book(order.asset_id)
        p = prepare(order, book, self.rules, time.time_ns(), market=self._market(order.asset_id, book))
        _note_replaced([p])
        p.ticket.arrival_ns = self._arrival()
        new = await self.admit([p], notify=True)
        return p.ticket.client_order_id not in new, p

    async def admit(self, prepared: Sequence[Prepared], *, notify: bool = False) -> set[str]:
        """Persist intents, start the new ones, resume known ones; returns the ids that were new."""
        gos = [p for p in prepared if not p.refused and not self.runner.running(p.ticket.client_order_id)]
        await self._restore_orphans(gos)  # before the insert: a crash after it leaves the claims as routed
        inserted = await self._insert_intents(gos)
        if inserted:  # and those an orphan pass released after reading no row for them
            await self._restore_orphans([p for p in gos if p.ticket.client_order_id in inserted])
        for p in gos:
            if p.ticket.client_order_id in inserted:
                self.runner.start(p.ticket, p.life, notify=notify)
        refused = [p for p in prepared if p.refused and not self.runner.running(p.ticket.client_order_id)]
        # refused by the insert (the wallet's mode changed, or it holds the token in the other venue): REJECTED
        at_insert = inserted.refused if isinstance(inserted, Inserted) else {}
        rejected = [(p.ticket, apply(OrderLife(coid), OrderRejected(*at_insert[coid])))
                    for p in gos if (coid := p.ticket.client_order_id) in at_insert]
        # urgent: this admission waits for the write, and so do the routed trades behind it in the stream
        new_refused = await self.runner.refuse([(p.ticket, p.life) for p in refused] + rejected, urgent=True)
        known = [p.ticket.client_order_id for p in [*gos, *refused]
                 if p.ticket.client_order_id not in inserted and p.ticket.client_order_id not in new_refused]
        if known:
            self.duplicates += len(known)
            await self._resume_known(known)
        self.admitted += len(inserted)
        self.refused += len(new_refused)
        return inserted | new_refused

    async def _restore_orphans(self, orders: list[Prepared]) -> None:
        """Reserve again what orders about to run reserved when routed, if the journal's repair pass released it as
        an orphan's (their routed trade was dead-lettered, and handed in again by a start that found the cursor
        before it): an order never runs without its reservation."""
        if self.repairs is not None and self.repairs.orphans_to_restore():
            await self.repairs.restore(self.redis, [p.ticket.client_order_id for p in orders],
                                       {p.ticket.client_order_id: p.ticket.order.subscription_id for p in orders})

    async def _insert_intents(self, gos: list[Prepared]) -> set[str]:
        if not gos:
            return Inserted()
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
        """Resume the stored orders of ``ids`` not running here. Those ended release their reservations again: a
        claim of an ended order handed in again was made again (the router's relog after Redis lost the claim and
        its release), and no end of the order will release it."""
        rows = []
        for coid in dict.fromkeys(ids):
            if self.runner.running(coid):
                continue
            row = await self.store.order_row(coid)
            if row is not None:
                rows.append(row)
        ended = [r["client_order_id"] for r in rows if r["state"] in _TERMINAL]
        if ended:
            await reservations.release_many(self.redis, ended)
        if rows:
            await self.runner.resume(rows)


def _note_replaced(prepared: Sequence[Prepared]) -> None:
    """Count and log the orders that named another market than their token's (intake gave them the token's): one
    line per asset and id named, however many followers' orders a fan-out repeats it in."""
    named: dict[tuple[str, str, str, str], list[str]] = {}
    for p in prepared:
        if p.condition_replaced:
            t = p.ticket
            _CONDITION_REPLACED.add(1, {"origin": t.origin})
            named.setdefault((t.order.asset_id, p.condition_replaced, t.order.condition_id, t.origin),
                             []).append(t.client_order_id)
    for (asset_id, given, taken, origin), orders in named.items():
        log.warning("order named another market than its token's book: it takes the book's condition id",
                    extra={"asset_id": asset_id, "named": given[:80], "condition_id": taken, "origin": origin,
                           "orders": len(orders), "client_order_id": orders[0]})
