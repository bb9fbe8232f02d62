"""Runs each order from intent to a terminal state: submit (retries behind the breaker), settle an
UNKNOWN outcome by status queries; then the tracker polls a placed order until the venue says it is final.

Every state change goes through :func:`.domain.order_lifecycle.apply` and is persisted by the journal before the
runner moves on; a restart resumes every non-terminal order from PostgreSQL (:meth:`OrderRunner.resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from opentelemetry import trace

from common.cancel import reraise_if_cancelling
from common.decimals import ZERO, fmt
from common.lease import refused, unleased
from common.marketstate import drop_market_rules
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.adapters.order_store import Change
from services.executor.burst_gate import BurstGate, Once, Slots
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import accepted, classify, decide_submit, decide_unknown
from services.executor.domain.fill_math import fill_booking
from services.executor.domain.ticket import Ticket
from services.executor.gc_pause import GcPause
from services.executor.journal import Journal
from services.executor.order_events import FirstEvent, build_event
from services.executor.persisting import persist
from services.executor.placed_orders import PlacedQueries
from services.executor.ports import AnswerHolder, Venue, safe
from services.executor.position_queue import PositionQueue, SizeLater, position_key, size_in_turn, sized_later
from services.executor.post_drain import PostDrain, close_runners
from services.executor.recovery import plan_resume
from services.executor.resuming import Resuming
from services.executor.runner_config import RunnerConfig
from services.executor.screening import screened
from services.executor.status_tracker import ERROR_BACKOFF_S, Tracker, error_delay
from services.executor.tracing import order_span, post_traceparent
from tradingtools.execution.v1 import execution_pb2 as epb

__all__ = ["MAX_RUNNER_ERRORS", "OrderRunner", "RunnerConfig"]

log = logging.getLogger(__name__)
MAX_RUNNER_ERRORS = 5
TRACKED = frozenset({lc.State.PLACED, lc.State.PARTIALLY_FILLED})  # at the venue: polled by the tracker


class OrderRunner:
    """Owns the running orders of this process."""

    def __init__(self, *, journal: Journal, venues: dict[str, Venue], gates: dict[str, BreakerGate],
                 redis: Any, config: RunnerConfig, rng: random.Random | None = None,
                 lease_confirmed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.journal = journal
        # awaited right before each POST (and cancel): a process that may have lost its lease waits to know
        self.lease_confirmed = lease_confirmed or unleased
        self.venues = venues
        self.gates = gates
        self.redis = redis
        self.cfg = config
        self.rng = rng or random.Random()
        self.slots = Slots(config.max_inflight)
        self.drain = PostDrain()  # a stop: no POST starts, those at the venue get the grace period to be answered
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ending: set[str] = set()  # orders an operator is ending by hand (operator_end): run by nothing else
        self.resuming = Resuming(lambda ids: self.journal.store.open_among(ids))  # orders being taken up (resume)
        self.burst = BurstGate(config.answer_defer_s, config.answer_defer_min_pending,
                               GcPause(config.gc_pause_max_s) if config.gc_pause_max_s > 0 else None)
        self.placed = PlacedQueries(venues, self.burst, self.transition, lost_after=config.lost_after,
                                    lost_after_s=config.placed_lost_after_s, lease_confirmed=self.lease_confirmed)
        self.tracker = Tracker(self.placed.poll, initial_s=config.poll_initial_s, max_s=config.poll_max_s,
                               max_concurrent=config.max_status_queries, max_errors=MAX_RUNNER_ERRORS,
                               error_backoff_s=ERROR_BACKOFF_S,
                               on_drop=self._dropped)
        self._first_event: dict[str, FirstEvent] = {}
        self.positions = PositionQueue()  # orders not final per (wallet, asset): sized-later SELLs wait their turn
        self.size_later: SizeLater | None = None  # set by the fan-out, which has the books and the positions
        self.on_give_up: Callable[[str], None] | None = None  # an order given up on (given_up.GivenUp.add)
        for venue in venues.values():
            if isinstance(venue, AnswerHolder):
                self.burst.hold_answers_with(venue)

    def _dropped(self, t: Ticket) -> None:
        """The tracker gave up on a placed order (:attr:`on_give_up` takes it up again later)."""
        self.positions.ended(position_key(t), t.client_order_id)
        self.placed.forget(t.client_order_id)
        self._give_up(t.client_order_id)

    def _give_up(self, client_order_id: str) -> None:
        if self.on_give_up is not None:
            self.on_give_up(client_order_id)

    def running(self, client_order_id: str) -> bool:
        """True when this process is already working on the order (running it, tracking it placed, ending it by hand
        or taking it up)."""
        return (client_order_id in self.tasks or client_order_id in self.tracker or client_order_id in self.ending
                or client_order_id in self.resuming)

    def start(self, ticket: Ticket, life: lc.OrderLife, *, venue_may_hold: bool = False,
              notify: bool = False) -> None:
        """Run an order (its intent is persisted) in the background; ``notify`` lets
        :meth:`wait_first_event` wait for its first OrderEvent."""
        coid = ticket.client_order_id
        if self.running(coid):
            return
        self.resuming.ran = True
        if notify:
            self._first_event[coid] = FirstEvent()
        later = sized_later(ticket, life)
        key = position_key(ticket)
        if not life.terminal:
            self.positions.opened(key, coid, sized_later=later)
        if later:
            self.tasks[coid] = asyncio.create_task(self._run_later(ticket, life), name=f"order:{coid}")
        elif ticket.buying and self.positions.unsized_ahead(key, coid):
            self.tasks[coid] = asyncio.create_task(self._run_behind(ticket, life, venue_may_hold),
                                                   name=f"order:{coid}")
        else:
            if life.state is lc.State.SUBMITTING:
                self.burst.add()
            self.tasks[coid] = asyncio.create_task(self._run(ticket, life, venue_may_hold), name=f"order:{coid}")

    async def wait_first_event(self, client_order_id: str, timeout_s: float) -> epb.OrderEvent | None:
        """Wait until the order (started with ``notify``) emitted an OrderEvent, or its runner ended
        (or ``timeout_s``); the latest event written for it meanwhile (None: none, or the order is not waited here)."""
        ev = self._first_event.get(client_order_id)
        if ev is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout=timeout_s)
        return ev.last

    async def refuse(self, tickets: list[tuple[Ticket, lc.OrderLife]], *, urgent: bool = False) -> set[str]:
        """Record orders refused before any venue call (REJECTED); returns the ids that were new.
        ``urgent``: a caller waits for the answer (the journal writes without waiting for company)."""
        if not tickets:
            return set()
        now = time.time_ns()
        changes = [Change(t, life, build_event(t, life, lc.OrderRejected(life.reason, life.detail), now_ns=now))
                   for t, life in tickets]
        inserted = await self.journal.write([], inserts=changes, urgent=urgent)
        for t, life in tickets:
            if t.client_order_id in inserted:
                log.info("order refused", extra={"client_order_id": t.client_order_id, "reason": life.reason,
                                                 "detail": life.detail})
        return inserted

    async def resume(self, rows: list[dict[str, Any]]) -> int:
        """Resume stored non-terminal orders not running here (start-up recovery, the given-up sweep, a replayed
        intent), as stored once taken (:mod:`.resuming`)."""
        async with self.resuming.taken(rows, self.running) as taken:
            runs, changes = plan_resume(taken, self.venues, lambda _coid: False, time.time_ns())
            if changes:
                await persist(self.journal, changes)
        for ticket, life in runs:  # given back just now, nothing awaited since: nothing else started them
            self.start(ticket, life, venue_may_hold=True)
        return len(runs)

    async def close(self, grace_s: float = 0.0) -> None:
        """Start no POST from now on; give those at the venue ``grace_s`` to be answered and written; then cancel
        every runner and the tracker (their orders stay non-terminal in PostgreSQL and resume at the next start)."""
        await close_runners(self, grace_s)

    # -- runners --------------------------------------------------------------------------------

    async def _run(self, t: Ticket, life: lc.OrderLife, may_hold: bool) -> None:
        coid = t.client_order_id
        submitting = life.state is lc.State.SUBMITTING
        first_answer = Once(self.burst.done if submitting else None)
        # the first POST counts as written once the step that sends it is over (or the runner ends)
        first_send = Once(self._sent_soon if submitting else None)
        span = order_span(t)
        crashes = 0
        try:
            while not life.terminal:
                if life.state in TRACKED:  # at the venue: the tracker polls it from here on
                    self.tracker.add(t, life)
                    break
                try:
                    life, may_hold = await self._step(t, life, may_hold, span, first_answer, first_send)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    crashes += 1
                    log.exception("order runner error", extra={"client_order_id": coid, "state": life.state.value,
                                                               "attempt": crashes})
                    if crashes >= MAX_RUNNER_ERRORS:
                        log.error("order runner gave up; the order is taken up again later",
                                  extra={"client_order_id": coid})
                        self._give_up(coid)
                        return
                    await asyncio.sleep(error_delay(crashes, ERROR_BACKOFF_S))
                    if life.state is lc.State.SUBMITTING:
                        # whatever happened, a POST may have left: settle by query, never re-POST blindly
                        life = await self.transition(t, life, [lc.OrderTimedOut("EXECUTOR_ERROR")])
        finally:
            if span.is_recording():
                span.set_attribute("order.state", life.state.value)
                if life.reason:
                    span.set_attribute("order.reason", life.reason)
                span.end()
            first_send.fire()
            first_answer.fire()
            self.drain.written(coid)
            self._forget(t)

    async def _run_later(self, t: Ticket, life: lc.OrderLife) -> None:
        """A SELL sent with a fraction of the position: wait until the wallet's earlier orders on the asset are
        final (their fills booked), size it on the position then, and run it like any other order."""
        ready = None
        key = position_key(t)
        try:
            assert self.size_later is not None, "sized-later orders need OrderRunner.size_later"
            await self.positions.wait_turn(key, t.client_order_id)
            async with self.positions.sizing(key):  # recorded as sent before the next SELL is sized
                sized = await size_in_turn(t, self.size_later)
                if sized.refused:
                    await self.transition(t, life, [lc.OrderRejected(sized.life.reason, sized.life.detail)])
                    return
                if sized.life.detail:  # how it was sized and priced (a cut to the ceiling, no book...)
                    life = replace(life, detail=sized.life.detail)
                life = await self.transition(sized.ticket, life, [lc.OrderSubmitted(sized.life.limit_price)],
                                              before_post=True)
                ready = sized.ticket
        finally:
            self.positions.sized(key, t.client_order_id)
            if ready is None:
                self._forget(t)
        self.burst.add()
        await self._run(ready, life, False)

    async def _run_behind(self, t: Ticket, life: lc.OrderLife, may_hold: bool) -> None:
        """A BUY of a position with a SELL ahead of it that waits for its size: it goes once that SELL is
        sized (its shares are not that SELL's to sell)."""
        try:
            await self.positions.wait_sells_sized(position_key(t), t.client_order_id)
            t.created_ns = time.time_ns()  # the resubmit window and the breaker wait count from now
            try:
                await self.journal.store.restamp(t.client_order_id)
            except Exception as exc:  # noqa: BLE001 - only a restart would count from the insert again
                log.warning("order start time not recorded", extra={"client_order_id": t.client_order_id,
                                                                    "error": repr(exc)[:200]})
                if refused(exc):  # the lease moved on: the order is its successor's to send
                    self._forget(t)
                    return
        except BaseException:
            self._forget(t)
            raise
        if life.state is lc.State.SUBMITTING:
            self.burst.add()
        await self._run(t, life, may_hold)

    def _forget(self, t: Ticket) -> None:
        """The order's runner is over: it no longer counts as running, nor holds up its position unless the
        tracker follows it from here."""
        coid = t.client_order_id
        if coid not in self.tracker:
            self.positions.ended(position_key(t), coid)
        self.tasks.pop(coid, None)
        ev = self._first_event.pop(coid, None)
        if ev is not None:
            ev.set()  # a SubmitOrder waiting for it answers now, with what is stored (its wait says so)

    def _sent_soon(self) -> None:
        asyncio.get_running_loop().call_soon(self.burst.sent)

    async def _step(self, t: Ticket, life: lc.OrderLife, may_hold: bool, span: trace.Span,
                    first_answer: Once, first_send: Once) -> tuple[lc.OrderLife, bool]:
        if life.state is lc.State.SUBMITTING:
            return await self._submit(t, life, may_hold, span, first_answer, first_send)
        if life.state is lc.State.UNKNOWN:
            return await self._settle(t, life), may_hold
        if life.state is lc.State.NEW:
            return await self.transition(t, life, [lc.OrderSubmitted()], before_post=True), may_hold
        raise AssertionError(f"no runner step for {life.state.value}")

    async def _submit(self, t: Ticket, life: lc.OrderLife, may_hold: bool, span: trace.Span,
                      first_answer: Once, first_send: Once) -> tuple[lc.OrderLife, bool]:
        gate = self.gates[t.venue]
        venue = self.venues[t.venue]
        assert t.request is not None
        deadline = t.created_ns / 1e9 + max(self.cfg.resubmit_max_age_s, self.cfg.breaker_wait_s)
        answered = False
        while life.state is lc.State.SUBMITTING:
            first_send.fire()  # counted after this step: the POST is written in it unless it waits
            admission = gate.admit()
            if not admission.allowed:
                remaining = deadline - time.time()
                if remaining > 0:  # wait (bounded by the order's age) for the open period to end or the probe's verdict
                    await gate.wait_change(min(remaining, gate.reopens_in_s()))
                    continue
                if may_hold or life.post_uncertain:  # an earlier attempt may have reached the venue: settle by query
                    timed_out = lc.OrderTimedOut("BREAKER_OPEN", answered=answered)
                    return await self.transition(t, life, [timed_out]), may_hold
                failed = lc.OrderFailed("BREAKER_OPEN", f"{gate.venue} breaker open")
                return await self.transition(t, life, [failed]), may_hold
            try:
                if not self.slots.free:
                    self.burst.starved()  # the answers in flight must be read for this POST to go
                await self.slots.acquire()
                try:
                    await self.lease_confirmed()
                    await self.drain.may_post()
                    self.drain.sent(t.client_order_id)
                    if not t.post_sent_ns:
                        t.post_sent_ns = time.time_ns()
                    result = await venue.place(t.request, traceparent=post_traceparent(span, t))
                finally:
                    self.slots.release()
            except asyncio.CancelledError:
                if admission.probe:
                    gate.abandon()
                raise
            except Exception as exc:  # noqa: BLE001 - an adapter bug must not lose the order: settle it
                reraise_if_cancelling()
                result = v.VenueError("disconnect", 0, "", repr(exc)[:300])
            result = screened(t, result, "post")
            if first_answer.fire():
                await self.burst.wait()
            c = classify(result)
            gate.record(c.breaker_failure)
            if c.invalidate_market:
                await self._invalidate_market(t.order.asset_id)
            if isinstance(result, v.VenueOrder):
                return await self.transition(t, life, accepted(life, result), result), True
            answered = c.answered
            # an open breaker does not end the order: the next attempt waits at the gate (bounded by age)
            may_retry = gate.closed or time.time() < deadline
            events = decide_submit(life, c, max_attempts=self.cfg.max_submit_attempts, may_retry_now=may_retry,
                                   venue_may_hold_already=may_hold)
            may_hold = may_hold or c.venue_may_hold
            life = await self.transition(t, life, events)
            if life.state is lc.State.SUBMITTING:
                await asyncio.sleep(self.cfg.retry_backoff.delay(max(0, life.attempts - 2), self.rng.random()))
        return life, may_hold

    async def _settle(self, t: Ticket, life: lc.OrderLife) -> lc.OrderLife:
        venue = self.venues[t.venue]
        while life.state is lc.State.UNKNOWN:
            await asyncio.sleep(self.cfg.settle_interval_s)
            result = screened(t, await safe(venue.query_by_client_id(t.client_order_id)), "query")
            if isinstance(result, v.VenueOrder):
                return await self.transition(t, life, accepted(life, result), result)
            age_s = (time.time_ns() - t.created_ns) / 1e9
            allowed = self.cfg.resubmit_max_age_s > 0 and age_s <= self.cfg.resubmit_max_age_s
            events = decide_unknown(life, classify(result), lost_after=self.cfg.lost_after, resubmit_allowed=allowed)
            if events:
                life = await self.transition(t, life, events)
        return life

    # -- state changes --------------------------------------------------------------------------

    async def transition(self, t: Ticket, life: lc.OrderLife, events: list[lc.Event],
                          order: v.VenueOrder | None = None, *, before_post: bool = False) -> lc.OrderLife:
        """Apply ``events`` and persist them; ``before_post``: the order's POST waits for the write (urgent)."""
        now_ns = time.time_ns()
        changes: list[Change] = []
        for event in events:
            before = life
            life = lc.apply(life, event)
            booking = fill_booking(t, before, life, order, now_ns // 1_000_000)
            proto = build_event(t, life, event, now_ns=now_ns, fill_size=booking.size if booking else ZERO,
                                fill_price=booking.price if booking else ZERO,
                                fee_shares=booking.fee_shares if booking else ZERO)
            changes.append(Change(t, life, proto, booking))
        ev = self._first_event.get(t.client_order_id)
        await persist(self.journal, changes, urgent=before_post or (ev is not None and not ev.is_set()))
        self.drain.written(t.client_order_id)
        if life.terminal:  # its fills are booked: SELLs sized after it may go
            self.positions.ended(position_key(t), t.client_order_id)
            self.placed.forget(t.client_order_id)
        if ev is not None and (written := [c.event for c in changes if c.event is not None]):
            ev.last = written[-1]
            ev.set()
        if life.terminal:
            # a fan-out fills a thousand orders at once: the usual outcome logs at DEBUG (it is in the events)
            level = logging.DEBUG if life.state is lc.State.FILLED else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "order terminal", extra={"client_order_id": t.client_order_id,
                                                        "state": life.state.value, "reason": life.reason,
                                                        "filled_size": fmt(life.filled_size)})
        return life

    async def _invalidate_market(self, asset_id: str) -> None:
        try:
            await drop_market_rules(self.redis, asset_id)
        except Exception as exc:  # noqa: BLE001 - the router refreshes on its own schedule too
            log.warning("market cache invalidation failed", extra={"asset_id": asset_id, "error": repr(exc)[:200]})
