"""Guard's coordinator (:class:`Guard`): ticks → engine → fires (``firing``); order events → DONE/FAILED and
copy exits (``order_flow``); trigger changes → engine (``trigger_changes``).

It takes its collaborators through the ports (:class:`Stores`, :class:`Clients`) and its limits as
:class:`Tuning`; ``app`` builds the real ones. The engine and every in-memory structure are touched only from
the event loop; PostgreSQL stays the source of truth (conditional updates settle any race with control).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from common.cancel import stop_tasks
from services.guard.domain import tick_view
from services.guard.domain.tick_view import PRICE_KINDS, TickInfo
from services.guard.domain.trigger_index import Cancelled, Engine, Outcome, Prices, load
from services.guard.domain.trigger_model import Reason
from services.guard.firing import UNRECORDED_MAX_AGE_S, Firer
from services.guard.guard_stats import GuardStats
from services.guard.loops import Batches, FireWindow
from services.guard.mark_flush import MarkFlusher
from services.guard.order_flow import Answers, OrderFlow
from services.guard.ports import CopyExits, Executor, Kickable, MarketCache, TriggerRows
from services.guard.trigger_changes import TriggerChanges
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)
_NOTHING = Outcome()


@dataclass(frozen=True, slots=True)
class Stores:
    """Where the coordinator reads and records triggers and copy exits (PostgreSQL in production)."""

    triggers: TriggerRows
    exits: CopyExits


@dataclass(frozen=True, slots=True)
class Clients:
    """What the coordinator calls and notifies: the executor (SELLs), market state, and the background
    publishers of the trigger-event outbox, of the watch set and of the price bands (``bands``, when given, is
    kicked with the watch set whenever the armed triggers change, and after every tick evaluated)."""

    executor: Executor
    markets: MarketCache
    outbox: Kickable
    watch: Kickable
    bands: Kickable | None = None


class _KickBoth:
    """Two publishers kicked together."""

    __slots__ = ("first", "second")

    def __init__(self, first: Kickable, second: Kickable) -> None:
        self.first, self.second = first, second

    def kick(self) -> None:
        self.first.kick()
        self.second.kick()


@dataclass(frozen=True, slots=True)
class Tuning:
    """The coordinator's limits and timings (``app`` takes them from the service settings)."""

    tick_max_age_s: float = 2.0
    replay_margin_s: float = 0.002
    book_max_age_s: float = 30.0
    max_slippage_bps: int = 300
    crash_after: str = ""
    fire_concurrency: int = 8
    defer_s: float = 0.25
    bookkeeping_interval_s: float = 0.0
    mark_flush_rows: int = 200
    mark_flush_duty: float = 0.25
    submitted_mark_delay_s: float = 0.0
    answers_gather_s: float = 0.0
    unrecorded_sell_max_age_s: float = UNRECORDED_MAX_AGE_S


class Guard:
    """Runs the engine against live prices and keeps it in line with PostgreSQL."""

    def __init__(self, stores: Stores, clients: Clients, tuning: Tuning | None = None, *,
                 clock_ns: Callable[[], int] = time.time_ns, fire_window: FireWindow | None = None) -> None:
        tuning = tuning or Tuning()
        self.engine = Engine()
        self.store = stores.triggers
        self.exit_store = stores.exits
        self.markets = clients.markets
        self.outbox = clients.outbox
        # the watch set and the bands both follow the armed triggers
        self.watch: Kickable = clients.watch if clients.bands is None else _KickBoth(clients.watch, clients.bands)
        self.bands = clients.bands
        # received_time_ns of the last tick handled that ingest's gate stamped in order (not a resolution: ingest's
        # recorder appends some): the bands reflect every tick up to it. At start (app), the newest tick's stamp
        # when this process took its cursor: those ticks are never read, ingest stops narrowing bands by them.
        self.through_ns = 0
        self.clock_ns = clock_ns
        self.tick_max_age_ns = int(tuning.tick_max_age_s * 1e9)
        # left-out prices sent again (tick_view.replay_refused): read only when they came this long after the asset's
        # latest trigger change, and after this process loaded its triggers and last read the asset's stored book
        self.replay_margin_ns = int(tuning.replay_margin_s * 1e9)
        self.replays_after_ns = 0
        self._books_read_ns: dict[str, int] = {}
        self.book_max_age_ms = int(tuning.book_max_age_s * 1000)
        self.defer_s = tuning.defer_s
        self.stats = GuardStats()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.orders = OrderFlow(self)
        self.changes = TriggerChanges(self)
        # the executor's answers to SELLs: settled in batches (one transaction for those that came together)
        self.answers = Answers(self.on_answered_events, self.spawn, gather_s=tuning.answers_gather_s)
        self.firer = Firer(self.store, clients.executor, self.markets, on_order_event=self.answers.add,
                           rearm=self.changes.rearm, clock_ns=clock_ns, max_slippage_bps=tuning.max_slippage_bps,
                           crash_after=tuning.crash_after, concurrency=tuning.fire_concurrency,
                           bookkeeping_interval_s=tuning.bookkeeping_interval_s,
                           submitted_mark_delay_s=tuning.submitted_mark_delay_s, window=fire_window,
                           spawn=self.spawn, unrecorded_max_age_s=tuning.unrecorded_sell_max_age_s)
        self._conditions: dict[str, set[str]] = {}
        # Prices of each asset's last fresh evaluation: a tick that changes none of them cannot fire
        # anything (the engine is unchanged since), so it is skipped without parsing.
        self._last_prices: dict[str, tuple[str, str, str]] = {}
        self._holds: Batches[tuple[list[str], bool, TickInfo]] = Batches(self._write_holds, self.spawn)
        # risen trailing marks to PostgreSQL (a lambda: load replaces the engine)
        self.marks = MarkFlusher(lambda: self.engine.take_dirty_books(), self.store, rows=tuning.mark_flush_rows,
                                 duty=tuning.mark_flush_duty)

    # start-up

    async def start(self) -> None:
        """Load every ARMED trigger, re-send unacknowledged SELLs, publish pending events and the watch set."""
        started = time.perf_counter()
        self.replays_after_ns = self.clock_ns()  # the triggers loaded carry no arm time
        self.engine = load(await self.store.load_armed())
        self.engine.mark_held(await self.store.held_ids())  # the next fresh tick releases them
        # The loaded triggers live as long as they stay armed: out of the collector's sight, a full
        # collection does not walk 100,000 triggers' objects in the middle of a tick.
        gc.collect()
        gc.freeze()
        self.stats.load_s = time.perf_counter() - started
        self.stats.loaded = len(self.engine)
        log.info("armed triggers loaded", extra={"triggers": len(self.engine), "assets": len(self.engine.assets()),
                                                 "load_s": round(self.stats.load_s, 3)})
        await self.markets.prefetch(self.engine.assets())
        resent = await self.firer.resubmit_unsubmitted()
        if resent:
            log.info("re-submitted unacknowledged SELLs", extra={"count": resent})
        self.outbox.kick()
        self.watch.kick()

    # ticks

    async def on_tick(self, tick: mpb.PriceTick) -> Outcome:
        """Evaluate one tick (:meth:`handle_tick` as a coroutine)."""
        return self.handle_tick(tick)

    def handle_tick(self, tick: mpb.PriceTick) -> Outcome:
        """Evaluate one tick; fires run as tasks so the next tick is not held up."""
        # Thousands a second: each field of the tick is read once (a protobuf field read builds a new object).
        stats = self.stats
        stats.ticks += 1
        received_ns = tick.received_time_ns
        now_ns = self.clock_ns()
        if not stats.ticks & 15 and received_ns:
            stats.tick_lag_ms.append((now_ns - received_ns) / 1e6)
        if received_ns > self.through_ns and tick.kind != mpb.TICK_KIND_MARKET_RESOLVED:
            self.through_ns = self.engine.settle(received_ns)  # no older price comes: arm epochs up to it merge
        raw = (tick.best_bid, tick.mid, tick.last_trade_price)
        if tick.kind in PRICE_KINDS:
            asset_id = tick.asset_id
            engine = self.engine
            if not engine.watches(asset_id):
                stats.ignored_ticks += 1  # no armed trigger on this asset
                return _NOTHING
            observed_ns = tick.observed_time_ns  # a left-out price sent again (tick_view.replay_refused)
            if observed_ns and tick_view.replay_refused(
                    observed_ns, now_ns, self.tick_max_age_ns, engine.published_band(asset_id), self.replay_margin_ns,
                    max(self.replays_after_ns, self._books_read_ns.get(asset_id, 0))):
                stats.replays_refused += 1
                return _NOTHING
            # tick_view.is_stale for a price tick (its kind is not STALE)
            untrusted = tick.stale or received_ns <= 0
            stale = untrusted or now_ns - received_ns > self.tick_max_age_ns
            if not stale and self._last_prices.get(asset_id) == raw:
                stats.unchanged_ticks += 1
                return _NOTHING
            band = engine.band(asset_id)
            prices = tick_view.known_prices(raw) if band is not None else None
            if prices is not None and band is not None:
                if tick_view.inside_band(prices, band):
                    if stale or not engine.holds(asset_id):  # a fresh tick releases held triggers
                        return self._quiet_tick(tick, asset_id, raw, stale)
                elif stale and engine.stale_covered(asset_id, Prices(*prices), trusted=not untrusted):
                    return self._quiet_tick(tick, asset_id, raw, stale)
        try:
            view = tick_view.view(tick, self.clock_ns(), self.tick_max_age_ns)
        except tick_view.BadTick as exc:
            self.stats.bad_ticks += 1
            log.warning("malformed tick ignored", extra={"asset_id": tick.asset_id, "error": str(exc)})
            return Outcome()
        if view.condition_id:
            self._conditions.setdefault(view.condition_id, set()).add(view.asset_id)
        if tick.kind == mpb.TICK_KIND_TICK_SIZE_CHANGE:
            self.markets.forget(view.asset_id)
        if view.resolved:
            # out of the engine now, before the rest of the batch is handled; cancelled in PostgreSQL by a task
            assets = self._resolved_assets(view)
            for asset_id in assets:
                self.engine.resolve(asset_id)
                self.changed(asset_id)
            self.spawn(self._resolve(view, assets))
            return Outcome()
        if view.stale or not self.engine.watches(view.asset_id) or received_ns < self.engine.armed_ns:
            self._last_prices.pop(view.asset_id, None)  # (no mark of a stop armed after it: the same price after may)
        else:
            self._last_prices[view.asset_id] = raw
        # a tick read too late to fire on (stale by its age only) was the book's price: it lifts trailing marks
        trusted = not tick.stale and tick.kind != mpb.TICK_KIND_STALE and received_ns > 0
        return self.evaluate(view.asset_id, view.prices, stale=view.stale, trusted=trusted,
                             info=TickInfo(None, view.venue_time_ms, view.received_time_ns,
                                           tick.trace if tick.HasField("trace") else None, self.clock_ns()))

    def _quiet_tick(self, tick: mpb.PriceTick, asset_id: str, raw: tuple[str, str, str], stale: bool) -> Outcome:
        """A tick whose prices are inside every band of its asset, stale or with nothing held: it cannot fire,
        hold or release anything."""
        self.stats.quiet_ticks += 1
        condition_id = tick.condition_id
        if condition_id:
            members = self._conditions.get(condition_id)
            if members is None:
                self._conditions[condition_id] = {asset_id}
            elif asset_id not in members:
                members.add(asset_id)
        if stale:
            self.stats.stale_ticks += 1
            self._last_prices.pop(asset_id, None)
        else:
            self._last_prices[asset_id] = raw
        return _NOTHING

    def changed(self, asset_id: str) -> None:
        """The engine's triggers on ``asset_id`` changed: the next tick must be evaluated whatever its prices."""
        self._last_prices.pop(asset_id, None)

    def evaluate(self, asset_id: str, prices: Prices, *, stale: bool, info: TickInfo, trusted: bool = True,
                 seen_ns: int = 0) -> Outcome:
        """Run the engine for one asset's prices and act on the outcome (``trusted``: :meth:`Engine.on_tick`;
        ``seen_ns``: when the prices were known current, when not the time ingest received them)."""
        out = self.engine.on_tick(asset_id, prices, stale=stale, trusted=trusted,
                                  received_ns=seen_ns or info.received_time_ns)
        if self.bands is not None:
            self.bands.kick()  # a mark may have risen, a trigger fired or been held
        if stale:
            self.stats.stale_ticks += 1
        if not out:
            return out
        by_winner: dict[str, list[Cancelled]] = {}
        for c in out.cancelled:
            by_winner.setdefault(c.by, []).append(c)
        for f in out.fired:
            self.spawn(self.firer.launch(f, by_winner.get(f.spec.id, []),
                                          TickInfo(f.price, info.venue_time_ms, info.received_time_ns, info.trace,
                                                   info.handled_ns)))
        if out.held:
            self.stats.held += len(out.held)
            price = out.held[0].price
            self._queue_hold([h.spec.id for h in out.held], True,
                             TickInfo(price, info.venue_time_ms, info.received_time_ns))
        if out.released:
            self._queue_hold([s.id for s in out.released], False, info)
        if out.fired or out.cancelled:
            self.watch.kick()
        return out

    async def catch_up(self) -> int:
        """Evaluate the stored books of every watched asset (after a start or a reconnect of the tick stream)."""
        return await self.recheck(*self.engine.assets())

    async def recheck(self, *asset_ids: str) -> int:
        """Evaluate the stored books of these assets (a stale book holds, a fresh one may fire; a book is fresh
        only when the venue confirmed it within the book age: never snapshotted, or left by a feed session
        that is over, it is stale whatever its levels say)."""
        now_ns = self.clock_ns()  # the books read are the prices from now on: a stop armed since may not take them
        now_ms = now_ns // 1_000_000
        self.books_read(asset_ids, now_ns)
        books, beat = await self.markets.books_and_feed(asset_ids)
        for asset_id, book in books.items():
            bid, ask = book.best_bid, book.best_ask
            prices = Prices(best_bid=bid, mid=(bid + ask) / 2 if bid is not None and ask is not None else None,
                            last_trade=book.last_trade_price)
            stale = book.is_stale(now_ms, self.book_max_age_ms, beat)
            # a stale stored book may be out of sync: its prices lift no mark
            self.evaluate(asset_id, prices, stale=stale, trusted=not stale, seen_ns=now_ns,
                          info=TickInfo(None, book.venue_time_ms, book.updated_ms * 1_000_000))
        return len(books)

    def books_read(self, asset_ids: Iterable[str], now_ns: int) -> None:
        """Guard evaluates (or takes marks from) prices as of ``now_ns`` for these assets, which ingest does not know
        of: an older left-out price it sends again is not read after them."""
        read = self._books_read_ns
        if len(read) > 50_000:  # past the age a price sent again may have, a time refuses nothing more
            self._books_read_ns = read = {a: t for a, t in read.items() if t > now_ns - self.tick_max_age_ns}
        for asset_id in asset_ids:
            read[asset_id] = now_ns

    def _queue_hold(self, ids: list[str], held: bool, info: TickInfo) -> None:
        """Record holds / releases in order; while one write is under way the next ones gather into one
        transaction (a lagging feed marks many books stale at once: one write each would feed the lag)."""
        self._holds.add((ids, held, info))

    async def _write_holds(self, batch: list[tuple[list[str], bool, TickInfo]]) -> None:
        await self.store.set_holds(batch)
        self.outbox.kick()

    def _resolved_assets(self, view: tick_view.TickView) -> set[str]:
        """The assets a resolution tick ends: its own, the winner's and every known asset of its market."""
        assets = {view.asset_id} | ({view.winning_asset_id} if view.winning_asset_id else set())
        return assets | (self._conditions.get(view.condition_id, set()) if view.condition_id else set())

    async def _resolve(self, view: tick_view.TickView, assets: set[str]) -> None:
        rows = await self.store.cancel_assets(assets, Reason.MARKET_RESOLVED.value,
                                              TickInfo(None, view.venue_time_ms, view.received_time_ns))
        self.stats.resolved_cancelled += len(rows)
        log.info("market resolved: triggers cancelled", extra={"assets": sorted(assets), "cancelled": len(rows)})
        self.outbox.kick()
        self.watch.kick()

    # order events (services.guard.order_flow)

    async def on_order_event(self, ev: epb.OrderEvent) -> None:
        """Settle trigger SELLs, register / resize / cancel copy exits (:meth:`OrderFlow.on_event`)."""
        await self.orders.on_event(ev)

    async def on_order_events(self, events: list[epb.OrderEvent]) -> None:
        """A batch of order events (:meth:`OrderFlow.on_events`)."""
        await self.orders.on_events(events)

    async def on_answered_events(self, events: list[epb.OrderEvent]) -> None:
        """The last events carried by the executor's answers to SELLs (applied even when seen before)."""
        await self.orders.on_events(events, answered=True)

    # housekeeping

    async def flush_marks(self, *, paced: bool = True) -> int:
        """Persist trailing high-water marks that rose (:class:`MarkFlusher`); returns how many."""
        return await self.marks.flush(paced=paced)

    def assets(self) -> set[str]:
        """Assets with armed triggers (the watch set)."""
        return self.engine.assets()

    def log_stats(self) -> None:
        """One log line with the counters, the recent tick lag and fire stage durations, and how often the
        publishers waited for fires (``window``)."""
        window = self.firer.window
        log.info("guard stats", extra={"armed": len(self.engine), "assets": len(self.engine.assets()),
                                       **self.stats.summary(), "fire": self.firer.stats.summary(),
                                       "window": {"held": window.held, "overrun": window.overrun}})

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the coordinator tracks (:meth:`drain` waits for it; a failure is logged)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("guard task failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for every fire and bookkeeping task started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_tasks(self) -> None:
        """Cancel background tasks (shutdown after the grace period)."""
        await stop_tasks(list(self._tasks))
