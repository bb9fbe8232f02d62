"""Firing a trigger: record the decision in PostgreSQL, then send the SELL (idempotent), exactly once.

Order of events for a fire, and what a crash at each point leaves:

1. The engine decides (in memory). Crash → the row is still ARMED; the next crossing tick after the
   restart fires it.
2. In one transaction, under the position's lock: the row and the position are read and the SELL is
   decided (client order id ``co_`` + hash(trigger id, fire number), so the same fire always gets
   the same id). ``SubmitOrder`` starts right then, while FIRED and the serialized Order (or
   CANCELLED / FAILED with the reason when nothing can be sold) are written and committed: the
   commit is off the tick → SELL path. Crash (or a failed commit) before the commit → the row is
   still ARMED with the same fire number: the next fire computes the same client order id, so a SELL the executor
   already has is not sent again (one ended LOST is not taken for it: ``lost_refires``), and the next fire of any
   trigger of the position counts that SELL as in flight (PostgreSQL's from the executor's order row on, this
   process's until then). Crash after → FIRED triggers whose SELL was not acknowledged are re-submitted at start-up.
3. The executor is idempotent by client order id: a second submission sends nothing. Its answer
   (and any order event) is applied only once the decision is committed. A re-sent SELL is stamped
   with the time it leaves (``routed_time_ns``): the executor refuses an order routed long ago.
4. ``submitted_at`` is set (in batches, by :class:`SubmittedMarker`). Crash before → one more (duplicate,
   harmless) submission at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from opentelemetry import metrics, trace

from common.decimals import ZERO
from common.retry import Backoff
from common.telemetry import extract, inject
from services.guard.domain import lost_refires, sell_orders, sell_sizing
from services.guard.domain.fire_records import FireDecision, FireFacts, FireResult
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_index import Cancelled, Fired
from services.guard.domain.trigger_model import Kind, Move, Reason, State, still_fires
from services.guard.domain.trigger_rows import TriggerRow, client_order_id
from services.guard.fire_bookkeeping import FireStats, SubmittedMarker, UnrecordedSells
from services.guard.loops import FireWindow, reraise_if_cancelled
from services.guard.ports import Executor, FireRecords, Markets, SubmitRejected
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("tradingtools.guard")
_METER = metrics.get_meter("tradingtools.guard")
_TICK_TO_ORDER = _METER.create_histogram(
    "guard.tick_to_order", unit="ms", description="Tick received by ingest → trigger SELL built by guard")
_FIRES = _METER.create_counter("guard.fires", description="Fire decisions recorded, by outcome")

CRASH_POINTS = frozenset({"", "decision", "submit"})
RESEND_CONCURRENCY = 16  # start-up re-submissions: SubmitOrder calls under way at once
# An unanswered SELL of an unrecorded fire is counted this long at most: the executor refuses an order routed more
# than its max_order_age_s (60 s) ago; the rest allows for a row it writes late and for the two clocks.
UNRECORDED_MAX_AGE_S = 75.0


def crash_if(point: str, configured: str) -> None:
    """Test hook: die like ``kill -9`` right after ``point`` when TT_GUARD_CRASH_AFTER names it."""
    if configured and configured == point:
        log.error("crashing on purpose", extra={"crash_after": point})
        os._exit(137)


class Firer:
    """Turns the engine's fire decisions into recorded FIRED triggers and SELLs."""

    def __init__(self, store: FireRecords, executor: Executor, markets: Markets, *,
                 on_order_event: Callable[[epb.OrderEvent], object],
                 rearm: Callable[..., object],
                 clock_ns: Callable[[], int], max_slippage_bps: int, crash_after: str = "",
                 concurrency: int = 8, backoff: Backoff | None = None, bookkeeping_interval_s: float = 0.0,
                 submitted_mark_delay_s: float = 0.0, window: FireWindow | None = None,
                 spawn: Callable[[Coroutine[Any, Any, Any]], object] | None = None,
                 unrecorded_max_age_s: float = UNRECORDED_MAX_AGE_S) -> None:
        self.store = store
        self.executor = executor
        self.markets = markets
        self.on_order_event = on_order_event
        self.rearm = rearm
        self.clock_ns = clock_ns
        self.max_slippage_bps = max_slippage_bps
        self.crash_after = crash_after
        self.backoff = backoff or Backoff(0.05, 2.0)
        self.rng = random.Random()
        self.stats = FireStats()
        self.window = window or FireWindow()  # fires launched and not yet answered (the publishers wait for them)
        self.in_flight: set[str] = set()
        self.submitted = SubmittedMarker(store.mark_submitted, min_interval_s=bookkeeping_interval_s,
                                         delay_s=submitted_mark_delay_s)
        self._slots = asyncio.Semaphore(concurrency)
        self._recording: dict[str, asyncio.Event] = {}
        self.unrecorded = UnrecordedSells(int(unrecorded_max_age_s * 1e9))
        # background work (start-up re-submissions): the coordinator's tracked tasks when given, else held here
        self.spawn = spawn or self._spawn
        self.background: set[asyncio.Task[Any]] = set()
        self._resending: set[str] = set()
        self._resend_calls = asyncio.Semaphore(RESEND_CONCURRENCY)

    async def recorded(self, trigger_id: str) -> None:
        """Wait until a fire of ``trigger_id`` being recorded now is committed (or failed)."""
        done = self._recording.get(trigger_id)
        if done is not None:
            await done.wait()

    def launch(self, fired: Fired, siblings: list[Cancelled],
               tick: TickInfo) -> Coroutine[Any, Any, FireResult | None]:
        """:meth:`fire`, for a task: counted in :attr:`window` from this call (before the task starts, so the
        publishers kicked by the same tick wait for it) until the first answer to its SELL, or its end."""
        self.window.begin()
        return self._fire_in_window(fired, siblings, tick)

    async def _fire_in_window(self, fired: Fired, siblings: list[Cancelled], tick: TickInfo) -> FireResult | None:
        ended = False

        def end(_task: object = None) -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.window.end()

        try:
            return await self.fire(fired, siblings, tick, on_answer=end)
        finally:
            end()

    async def fire(self, fired: Fired, siblings: list[Cancelled], tick: TickInfo, *,
                   on_answer: Callable[[asyncio.Task[Any]], object] | None = None) -> FireResult | None:
        """Record one fire (and its OCO cancellations), then submit its SELL; ``on_answer`` is called when
        the first submission of the SELL ends (answered or failed)."""
        spec = fired.spec
        sibling_ids = [c.spec.id for c in siblings]
        marks = {t.id: t.high_water_mark for t in (spec, *(c.spec for c in siblings))
                 if t.kind is Kind.TRAILING_STOP and t.high_water_mark > 0}
        self.in_flight.update([spec.id, *sibling_ids])
        recording = self._recording[spec.id] = asyncio.Event()
        if tick.handled_ns and tick.received_time_ns:
            started_ns = self.clock_ns()
            self.stats.before_ms.append(((tick.handled_ns - tick.received_time_ns) / 1e6,
                                         (started_ns - tick.handled_ns) / 1e6))
        try:
            self.stats.decided += 1
            # read beside the locked PostgreSQL reads (awaited before deciding); a failure is the fire's
            market_read = asyncio.ensure_future(self.markets.market(spec.asset_id))
            market_read.add_done_callback(_retrieve)
            unseen = self.unrecorded.unseen(spec.asset_id)
            before: asyncio.Future[Any] = market_read if not unseen else asyncio.gather(
                market_read, self._look_for_orders(unseen))
            before.add_done_callback(_retrieve)

            def decide(row: TriggerRow, facts: FireFacts) -> FireDecision:
                current = row.spec()
                if not still_fires(spec, current, fired.price) or (sibling_ids and not current.closing):
                    # changed by control since the engine loaded it: nothing is sent; reloaded and re-evaluated.
                    # One that no longer closes its position's exits (a sellFraction PATCHed below 1) must not take
                    # its OCO siblings with it: they guard the rest.
                    return FireDecision(State.ARMED, Reason.TRIGGER_CHANGED.value)
                if facts.resolved:  # settled with its market: the shares pay out, no SELL can be sent
                    return FireDecision(State.CANCELLED, Reason.MARKET_RESOLVED.value)
                market = market_read.result()
                if market is not None and market.resolved_winner:  # resolved, its position not settled yet
                    return FireDecision(State.CANCELLED, Reason.MARKET_RESOLVED.value)
                fire_no = lost_refires.fire_number(row, facts.lost)
                if fire_no is None:  # its earlier SELL ended LOST and may still have sold: decide again later
                    return FireDecision(State.ARMED, Reason.DEFERRED_IN_FLIGHT_SELL.value)
                in_flight = facts.in_flight + self.unrecorded.shares((row.follower_wallet_id, row.asset_id),
                                                                     besides=row.id, now_ns=self.clock_ns())
                size = sell_sizing.sell_size(size=row.size, sell_fraction=row.sell_fraction, held=facts.held,
                                             in_flight=in_flight,
                                             min_order_size=market.min_order_size if market else ZERO)
                if not size.sendable and in_flight > 0:
                    # another SELL on this position is still settling: decide again once it has
                    return FireDecision(State.ARMED, Reason.DEFERRED_IN_FLIGHT_SELL.value, held=size.available)
                if not size.sendable:
                    state = State.CANCELLED if size.reason is Reason.NO_POSITION else State.FAILED
                    return FireDecision(state, size.reason.value, held=size.available)
                coid = client_order_id(row.id, fire_no)
                ctx = sell_orders.SellContext(
                    condition_id=facts.condition_id or (market.condition_id if market else ""),
                    tick_size=market.tick_size if market else ZERO,
                    min_order_size=market.min_order_size if market else ZERO,
                    neg_risk=market.neg_risk if market else False, follower_user_id=facts.follower_user_id,
                    mode_paper=facts.mode_paper, max_slippage_bps=self.max_slippage_bps,
                    venue_time_ms=tick.venue_time_ms, received_time_ns=tick.received_time_ns)
                order_trace = cpb.TraceContext()
                inject(order_trace)  # the fire's span, a child of the tick's trace
                now_ns = self.clock_ns()
                order = sell_orders.build_sell(row, client_order_id=coid, size=size.size, price=fired.price,
                                               ctx=ctx, now_ns=now_ns, trace=order_trace)
                if tick.received_time_ns:
                    _TICK_TO_ORDER.record((now_ns - tick.received_time_ns) / 1e6)
                built.append(order)
                return FireDecision(State.FIRED, size.reason.value, size.size, size.available, coid,
                                    order.SerializeToString())

            built: list[epb.Order] = []
            sending: list[asyncio.Task[epb.SubmitOrderResponse]] = []
            sent: list[tuple[epb.Order, Decimal]] = []  # each SELL sent, and its shares
            decided_at: list[float] = []

            def send_now(decision: FireDecision) -> None:
                decided_at.append(time.perf_counter())
                if decision.state is State.FIRED and built:
                    sending.append(asyncio.get_running_loop().create_task(self.executor.submit(built[-1])))
                    sent.append((built[-1], decision.size))

            parent = extract(tick.trace) if tick.trace is not None else None
            t0 = time.perf_counter()
            try:
                with _TRACER.start_as_current_span("guard.fire", context=parent,
                                                   attributes={"trigger.id": spec.id, "asset.id": spec.asset_id}):
                    async with self._slots:
                        t1 = time.perf_counter()
                        result = await self.store.fire(spec.id, sibling_ids, spec.high_water_mark, tick, decide,
                                                       send_now, before_decide=before)
                        t2 = time.perf_counter()
            except Exception:  # nothing recorded: watch the triggers again, a later tick retries
                reraise_if_cancelled()
                for task, (order, shares) in zip(sending, sent, strict=True):
                    # a SELL already sent keeps its id: the next fire of this row reuses it; the position's other
                    # fires count it as in flight until the executor has it (its order row counts from then)
                    task.add_done_callback(_consume)
                    self.unrecorded.add((order.follower_wallet_id, order.asset_id), spec.id, shares, task,
                                        order_id=order.client_order_id, sent_ns=order.routed_time_ns)
                self.stats.record_errors += 1
                log.exception("fire not recorded; re-arming", extra={"trigger_id": spec.id})
                self.in_flight.difference_update([spec.id, *sibling_ids])
                self.rearm([spec.id, *sibling_ids], marks=marks)
                return None
            if result.row is None and result.current_state is State.ARMED:
                if result.decision is not None and result.decision.reason == Reason.TRIGGER_CHANGED.value:
                    self.stats.changed += 1
                else:
                    self.stats.deferred += 1
                self.in_flight.difference_update([spec.id, *sibling_ids])
                self.rearm([spec.id, *sibling_ids], spec.asset_id, marks=marks)
                return result
            if result.row is None:
                # Control cancelled or changed it first: nothing sent; siblings are untouched in PostgreSQL.
                self.stats.lost_race += 1
                self.in_flight.difference_update(sibling_ids)
                self.rearm(sibling_ids, marks=marks)
                return result
            crash_if("decision", self.crash_after)
            decision = result.decision
            assert decision is not None
            _FIRES.add(1, {"outcome": decision.state.value})
            if decision.state is State.FIRED and decision.order is not None:
                self.stats.fired += 1
                self.unrecorded.forget(spec.id)  # an earlier unrecorded SELL of it: the same order, counted now
                if unknown := [r.id for r in result.cancelled if r.id not in sibling_ids]:  # cancelled, not known
                    self.rearm(unknown)
                first = sending[0] if sending else None
                answered: list[float] = []
                if first is not None:
                    first.add_done_callback(lambda _t: answered.append(time.perf_counter()))
                    if on_answer is not None:
                        first.add_done_callback(on_answer)
                recording.set()
                await self.submit(result.row.id, decision.order_id, decision.order, first=first)
                t_dec = decided_at[0] if decided_at else t2
                self.stats.stages_ms.append(((t1 - t0) * 1e3, (t_dec - t1) * 1e3, (t2 - t_dec) * 1e3,
                                             ((answered[0] if answered else time.perf_counter()) - t_dec) * 1e3))
            else:  # nothing sold: the siblings (not cancelled) guard the position again
                self.stats.not_sent += 1
                self.rearm(sibling_ids, marks=marks)
            return result
        finally:
            recording.set()
            if self._recording.get(spec.id) is recording:
                del self._recording[spec.id]
            self.in_flight.difference_update([spec.id, *sibling_ids])

    async def submit(self, trigger_id: str, order_id: str, order_bytes: bytes,
                     first: asyncio.Task[epb.SubmitOrderResponse] | None = None,
                     gate: asyncio.Semaphore | None = None) -> None:
        """Send a recorded SELL until the executor answers (the same client order id every time: the executor
        takes it once); ``first`` is an attempt already under way; ``gate`` bounds the calls under way at once.

        Every other attempt is stamped with the time it leaves (``routed_time_ns``): the executor refuses an
        order routed longer ago than its age limit (STALE_ORDER), and a SELL re-sent after a restart or an
        executor outage must still go out; one the executor already has is a duplicate whatever its stamp."""
        order: epb.Order | None = None  # parsed for a new attempt only: the first is a fire's, already sent
        attempt = 0
        while True:
            if first is None and order is None:
                order = epb.Order.FromString(order_bytes)
            try:
                if first is not None:
                    call, first = first, None
                    resp = await call
                else:
                    assert order is not None
                    async with gate or contextlib.nullcontext():
                        order.routed_time_ns = self.clock_ns()
                        resp = await self.executor.submit(order)
                break
            except SubmitRejected as exc:
                self.stats.submit_rejected += 1
                log.warning("SELL refused by the executor", extra={"trigger_id": trigger_id, "code": exc.code})
                await self._settle_refused(trigger_id, order_id, exc.code)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - transient: the same id makes a retry safe
                reraise_if_cancelled()
                self.stats.submit_retries += 1
                delay = self.backoff.delay(min(attempt, 6), self.rng.random())
                attempt += 1
                log.warning("SubmitOrder failed; retrying", extra={"trigger_id": trigger_id,
                                                                   "error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)
        self.stats.submitted += 1
        if resp.duplicate:
            self.stats.duplicates += 1
        crash_if("submit", self.crash_after)
        self.submitted.add(trigger_id, order_id)
        if resp.HasField("last_event") and resp.last_event.client_order_id:
            result = self.on_order_event(resp.last_event)
            if asyncio.iscoroutine(result):
                await result

    async def _settle_refused(self, trigger_id: str, order_id: str, code: str) -> None:
        """Record FAILED a SELL the executor refused for good, retrying until PostgreSQL takes it: no order exists,
        so no order event will bring the refusal again, and while the row stays FIRED its size counts as in flight
        on the position (its other triggers are deferred). A crash meanwhile leaves it unsubmitted: the next
        start-up sends it again and records the refusal then."""
        reason = f"{Reason.SUBMIT_REJECTED.value}:{code}"
        for attempt in itertools.count():
            try:
                await self.store.settle(trigger_id, order_id, Move.FAIL, reason, ZERO, ZERO)
                return
            except Exception as exc:  # noqa: BLE001 - PostgreSQL may be down: keep trying
                reraise_if_cancelled()
                self.stats.settle_retries += 1
                delay = self.backoff.delay(min(attempt, 6), self.rng.random())
                log.warning("refused SELL not recorded; retrying", extra={"trigger_id": trigger_id,
                                                                          "error": repr(exc)[:300], "delay_s": delay})
                await asyncio.sleep(delay)

    async def _look_for_orders(self, order_ids: list[str]) -> None:
        """Stop counting the unrecorded SELLs the executor has an order of (PostgreSQL counts them); when that
        cannot be read, they are counted still."""
        try:
            self.unrecorded.seen(await self.store.ordered(order_ids))
        except Exception as exc:  # noqa: BLE001 - the fire goes on, counting them
            reraise_if_cancelled()
            log.warning("orders of unrecorded SELLs not read", extra={"error": repr(exc)[:300]})

    async def resubmit_unsubmitted(self) -> int:
        """At start-up: re-send every FIRED SELL the executor may not have, in the background (each until the
        executor answers, at most ``RESEND_CONCURRENCY`` calls at once); returns how many. Start-up does not wait
        for them: an executor that is down, or a SELL it keeps failing, must not keep guard from watching."""
        rows = [r for r in await self.store.unsubmitted() if r.fire_order and r.id not in self._resending]
        for row in rows:
            self._resending.add(row.id)
            self.spawn(self._resubmit(row))
        return len(rows)

    async def _resubmit(self, row: TriggerRow) -> None:
        try:
            await self.submit(row.id, row.order_id, bytes(row.fire_order or b""), gate=self._resend_calls)
            self.stats.resubmitted += 1
        finally:
            self._resending.discard(row.id)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task held in :attr:`background` (when no ``spawn`` was given)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("guard firing task failed", exc_info=task.exception())


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a side read's outcome as seen (its failure is raised where it is awaited, or moot)."""
    if not task.cancelled():
        task.exception()


def _consume(task: asyncio.Task[object]) -> None:
    """Retrieve the outcome of a SELL sent for a fire that was not recorded (logged, never raised)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("SELL of an unrecorded fire failed", extra={"error": repr(task.exception())[:300]})
