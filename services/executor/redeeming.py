"""Redeeming winning shares through the Insiders API: each recorded redemption is POSTed with its Idempotency-Key (the
attempt recorded first), retried on 408/425/429/5xx, a 409 naming no final refusal, and timeouts with backoff behind the
venue's circuit breaker, and followed through ``GET /v1/redeem/{id}`` until confirmed; a final 4xx ends it FAILED with
the reason. A run of failures (of the POST or of the status queries) is retried for as long as it takes (the key
makes each retry safe); once it crosses its bound (its N-th failure in a row, or its first at or past its age) it is
overdue: alerted once (counted in ``executor.redemptions_overdue``), then retried every five minutes, still PENDING
or SUBMITTED, reason ``REDEMPTION_OVERDUE`` (:mod:`services.executor.domain.redemption_retry`). A SUBMITTED
redemption's wait for its final status is such a run from when the venue took it: one whose status queries keep
answering ``submitted`` (or fail) past the age bound is overdue the same way (``call`` ``status``), and asked on every
five minutes. The run's count, start and crossing are kept in PostgreSQL, so that a restart neither starts it again
nor alerts it twice.
The breaker is the LIVE orders' too: a call that was its half-open probe and ends without an answer (cancelled, an
adapter error) gives the probe back, so that the next call probes; a call refused while another's probe is out is
tried again after its backoff. A status word the contract does not list is followed like
``submitted`` when there is a redemption to follow (logged, counted in ``executor.redeem_unknown_status``; see
:mod:`services.executor.domain.redemption`).
A status query answered 404 (the venue no longer knows the redemption, or does not yet: a lag) is asked again,
but once :data:`NOT_FOUND_LIMIT` of them at least came in a row over ``not_found_s`` (counted while this process
runs) the redemption ends FAILED (``REDEMPTION_NOT_FOUND``, alerted) instead of being asked about for ever.
Every change is stored with its audit-log row and appended to ``tt:stream:redemption_events`` (an
outbox: what failed to append after the commit is appended by the next round). Resumes after any restart from
PostgreSQL. With auto-redeem off, redemptions are recorded but not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal

from opentelemetry import metrics

from common.cancel import reraise_if_cancelling
from common.decimals import fmt
from common.ids import hash_id
from common.lease import unleased
from common.streams import DurableLog
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.adapters.insiders_api import parse_redemption
from services.executor.adapters.redemption_store import RedemptionRow, RedemptionStore
from services.executor.alerting import redemption_failed, redemption_overdue
from services.executor.config import Settings
from services.executor.domain import redemption as rd
from services.executor.domain.redemption_retry import RetryPolicy, after_answer, after_failure, retry_event
from services.executor.ports import Answer, RedeemApi
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)
_meter = metrics.get_meter("tradingtools.executor")
_CALLS = _meter.create_counter("executor.redeem_calls", description="Redemption calls, by call and outcome")
_ENDED = _meter.create_counter("executor.redemptions", description="Redemptions ended, by state and reason")
_UNKNOWN = _meter.create_counter("executor.redeem_unknown_status",
                                 description="Redemption answers with a status word the contract omits, by call")
_OVERDUE = _meter.create_counter("executor.redemptions_overdue",
                                 description="Runs of redemption failures, and waits of submitted redemptions for "
                                             "their final status, that crossed their bound (alerted once, retried "
                                             "on), by the call that keeps failing or not ending (redeem, status)")

DEFAULT_RETRY = RetryPolicy()
NOT_FOUND = "REDEMPTION_NOT_FOUND"
NOT_FOUND_LIMIT = 3  # status queries answered 404 in a row (over Redeemer.not_found_s) that end it FAILED

EVENT_TYPES = {rd.RedemptionState.PENDING: epb.REDEMPTION_EVENT_TYPE_PENDING,
               rd.RedemptionState.SUBMITTED: epb.REDEMPTION_EVENT_TYPE_SUBMITTED,
               rd.RedemptionState.CONFIRMED: epb.REDEMPTION_EVENT_TYPE_CONFIRMED,
               rd.RedemptionState.FAILED: epb.REDEMPTION_EVENT_TYPE_FAILED}


def redeem_retry(settings: Settings) -> RetryPolicy:
    """The retries of redemptions as the tuning sets them."""
    return RetryPolicy(overdue_failures=settings.tuning.redeem_overdue_failures,
                       overdue_ms=int(settings.tuning.redeem_overdue_s * 1000))


def outcome_of(answer: Answer, *, status_query: bool, now_ms: int, delay_ms: int) -> rd.Event:
    """The redemption event a venue answer makes."""
    if answer.status == 200 and answer.body is not None:
        try:
            view = parse_redemption(answer.body)
        except (ValueError, ArithmeticError) as exc:
            return rd.RedeemRetryable("UNREADABLE_ANSWER", repr(exc)[:200], now_ms, delay_ms)
        if status_query:
            return rd.RedeemStatusSeen(view.status, view.tx_hash, view.payout_usd, view.error, now_ms)
        return rd.RedeemAnswered(view.redeem_id, view.status, view.tx_hash, view.payout_usd, view.error, now_ms)
    if answer.status == 0:
        return rd.RedeemRetryable("VENUE_UNAVAILABLE", f"{answer.kind}: {answer.message}"[:300], now_ms, delay_ms)
    if status_query and answer.status == 404:  # asked again; ended by the Redeemer after a few in a row
        return rd.RedeemRetryable(NOT_FOUND, f"HTTP 404 {answer.code}"[:300], now_ms, delay_ms)
    if rd.retryable_status(answer.status) or status_query:  # a status query's 4xx is asked again later
        return rd.RedeemRetryable("VENUE_UNAVAILABLE", f"HTTP {answer.status} {answer.code}"[:300], now_ms, delay_ms)
    if rd.retried_status(answer.status, answer.code):  # 408, 409: no verdict yet; the same key asked again gets it
        return rd.RedeemRetryable(answer.code or f"VENUE_HTTP_{answer.status}",
                                  f"HTTP {answer.status} {answer.message}"[:300], now_ms, delay_ms)
    return rd.RedeemRefused(answer.code or f"VENUE_HTTP_{answer.status}", answer.message[:300])


def redemption_event(row: RedemptionRow, r: rd.Redemption, now_ns: int) -> epb.RedemptionEvent:
    """The RedemptionEvent of ``r``'s current state."""
    return epb.RedemptionEvent(
        event_id=hash_id("rde", r.key, r.state.value), type=EVENT_TYPES[r.state], redemption_key=r.key,
        redeem_id=r.redeem_id, follower_wallet_id=row.follower_wallet_id, follower_proxy=row.wallet,
        condition_id=row.condition_id, shares=fmt(row.shares),
        payout_usd=fmt(r.payout_usd if r.payout_usd is not None else row.shares), tx_hash=r.tx_hash,
        attempts=r.attempts, reason=r.reason, detail=r.detail, received_time_ns=now_ns)


class Redeemer:
    """Runs redemptions (run :meth:`run` as a task; :meth:`wake` when new ones are recorded)."""

    def __init__(self, store: RedemptionStore, api: RedeemApi | None, gate: BreakerGate | None, events: DurableLog,
                 *, enabled: bool = True, retry: RetryPolicy = DEFAULT_RETRY, poll_s: float = 2.0,
                 max_concurrent: int = 32, batch: int = 512, rng: random.Random | None = None,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 lease_confirmed: Callable[[], Awaitable[None]] | None = None, not_found_s: float = 600.0) -> None:
        _ENDED.add(0, {"state": rd.RedemptionState.FAILED.value, "reason": ""})  # exported from the start (a rule)
        for call in ("redeem", "status"):
            _OVERDUE.add(0, {"call": call})
        self.store = store
        self.api = api
        self.lease_confirmed = lease_confirmed or unleased  # awaited before each POST (see OrderRunner)
        self.gate = gate
        self.events = events
        self.enabled = enabled and api is not None
        self.retry = retry  # the backoff, and the bounds past which a run of failures is overdue
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self.clock_ms = clock_ms
        self.batch = batch
        self._slots = asyncio.Semaphore(max_concurrent)
        self._wake = asyncio.Event()
        self.posts = 0
        self.unknown_statuses = 0  # answers whose status word the contract does not list
        self.overdue_alerts = 0  # runs of failures this process saw cross their bound (each alerted)
        self.not_found_s = not_found_s
        # redemption key → (status queries answered 404 in a row, when the first of them came, Unix ms)
        self._not_found: dict[str, tuple[int, int]] = {}

    def wake(self, _keys: list[str] | None = None) -> None:
        """New redemptions were recorded: look now."""
        self._wake.set()

    async def run(self) -> None:
        """Publish pending events, run due redemptions, sleep until the next is due (or a wake), repeat."""
        if not self.enabled:
            log.warning("auto-redeem is off: redemptions are recorded PENDING and not sent")
        while True:
            try:
                await self.publish_pending()
                if self.enabled:
                    await self.round()
                delay = self.poll_s
                nxt = await self.store.next_due_ms() if self.enabled else None
                if nxt is not None:
                    delay = min(delay, max(0.0, (nxt - self.clock_ms()) / 1000))
            except asyncio.CancelledError:
                raise
            except Exception:  # a storage outage: the next round retries
                reraise_if_cancelling()
                log.exception("redemption round failed")
                delay = self.poll_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, delay))

    async def round(self) -> int:
        """Run every due redemption once; returns how many. The attempts of the due PENDING ones are recorded in
        one transaction before any of their POSTs leaves; the calls then go out a few at a time, and their
        outcomes are stored in batches as they come back (what finished during one commit goes in the next)."""
        due = await self.store.due(self.clock_ms(), self.batch)
        if not due:
            return 0
        now = self.clock_ms()
        sent = [(row, rd.apply(row.redemption, rd.RedeemSent(now))) for row in due
                if row.redemption.state is rd.RedemptionState.PENDING]
        await self._store_many(sent)  # each attempt is on record before its POST can leave
        # what they ask for as it stands now that no late winner can join them any more (read before, it may not)
        terms = await self.store.terms([row.redemption.key for row, _ in sent]) if sent else {}
        sent_rows = {row.redemption.key: _with(_asking(row, terms.get(row.redemption.key)), after)
                     for row, after in sent}
        calls = [asyncio.ensure_future(self._call(sent_rows.get(row.redemption.key, row))) for row in due]
        try:
            waiting: set[asyncio.Future[tuple[RedemptionRow, rd.Redemption]]] = set(calls)
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                await self._store_many([task.result() for task in done])
        finally:  # cancelled (shutdown): no call outlives its round
            for task in calls:
                task.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        return len(due)

    async def _call(self, row: RedemptionRow) -> tuple[RedemptionRow, rd.Redemption]:
        """One call for one redemption, its POST (PENDING, the attempt already recorded) or its status query
        (SUBMITTED); returns the redemption after the answer (never raises but for cancellation)."""
        async with self._slots:
            r = row.redemption
            rand = self.rng.random()
            delay = rd.retry_delay_ms(r, self.retry.backoff, rand)
            try:
                return row, self._answered(row, await self._ask(row, delay), rand)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one redemption failing must not stop the others: retried after a backoff
                log.exception("redemption call failed", extra={"redemption_key": r.key})
                failed = rd.RedeemRetryable("INTERNAL_ERROR", repr(exc)[:300], self.clock_ms(), delay)
                return row, rd.apply(r, self._bounded(r, failed, rand))

    async def _ask(self, row: RedemptionRow, delay_ms: int) -> rd.Event:
        assert self.api is not None
        r = row.redemption
        admission = self.gate.admit() if self.gate is not None else None
        if admission is not None and not admission.allowed:
            assert self.gate is not None
            # open: until its probe may go; half-open, its probe out: the verdict is a request away, so the backoff
            wait_ms = delay_ms if self.gate.probing else max(delay_ms, int(self.gate.reopens_in_s() * 1000))
            return rd.RedeemRetryable("BREAKER_OPEN", "the venue's breaker is open", self.clock_ms(), wait_ms)
        try:
            if r.state is rd.RedemptionState.PENDING:
                await self.lease_confirmed()
                self.posts += 1
                answer = await self.api.redeem(r.key, row.follower_wallet_id, row.condition_id, row.neg_risk,
                                               row.amounts)
                call, status_query = "redeem", False
            else:
                answer = await self.api.redemption(r.redeem_id)
                call, status_query = "status", True
        except BaseException:  # no verdict (cancelled, an adapter error): a probe kept out would shut the venue
            if admission is not None and admission.probe:
                assert self.gate is not None
                self.gate.abandon()
            raise
        failed = answer.status == 0 or rd.retryable_status(answer.status)
        if self.gate is not None:
            self.gate.record(failure=failed)
        _CALLS.add(1, {"call": call, "outcome": "retryable" if failed else str(answer.status)})
        return outcome_of(answer, status_query=status_query, now_ms=self.clock_ms(), delay_ms=delay_ms)

    def _answered(self, row: RedemptionRow, event: rd.Event, rand: float) -> rd.Redemption:
        if self._not_found_too_often(row.redemption, event):
            gone = rd.RedeemStatusSeen("failed", error=f"the venue no longer knows redemption "
                                                       f"{row.redemption.redeem_id[:80]!r}: its status queries "
                                                       f"answered 404 in a row for {self.not_found_s:g} s")
            return replace(rd.apply(row.redemption, gone), reason=NOT_FOUND)
        after = rd.apply(row.redemption, self._bounded(row.redemption, event, rand))
        if not isinstance(event, rd.RedeemAnswered | rd.RedeemStatusSeen):
            return after
        if not rd.known_status(event.status):
            self._unknown_status(row, event, after)
        if after.state is rd.RedemptionState.SUBMITTED:  # then ask its status (overdue: as its retries are spaced)
            every_ms = self.retry.overdue_spacing_ms if after.overdue_since_ms else int(self.poll_s * 1000)
            return replace(after, next_attempt_ms=self.clock_ms() + every_ms)
        return after

    def _bounded(self, r: rd.Redemption, event: rd.Event, rand: float) -> rd.Event:
        """A retryable failure as the retry policy has it: scheduled, and overdue once its run crossed its bound; a
        status query's answer that is not final, overdue once the redemption's wait crossed it."""
        if isinstance(event, rd.RedeemStatusSeen) and r.state is rd.RedemptionState.SUBMITTED:
            return after_answer(self.retry, r, event)
        if not isinstance(event, rd.RedeemRetryable):
            return event
        step = after_failure(self.retry, failures=r.failures, failing_since_ms=r.failing_since_ms,
                             overdue_since_ms=r.overdue_since_ms, now_ms=event.now_ms, rand=rand,
                             at_least_ms=event.delay_ms, waiting=r.state is rd.RedemptionState.SUBMITTED)
        return retry_event(self.retry, step, event)

    def _not_found_too_often(self, r: rd.Redemption, event: rd.Event) -> bool:
        """Count a status query's 404 (any other outcome starts the count again); True once there were
        :data:`NOT_FOUND_LIMIT` at least, in a row over ``not_found_s``."""
        if not (r.state is rd.RedemptionState.SUBMITTED and isinstance(event, rd.RedeemRetryable)
                and event.reason == NOT_FOUND):
            self._not_found.pop(r.key, None)
            return False
        n, first_ms = self._not_found.get(r.key, (0, self.clock_ms()))
        n += 1
        if n < NOT_FOUND_LIMIT or self.clock_ms() - first_ms < self.not_found_s * 1000:
            self._not_found[r.key] = (n, first_ms)
            return False
        self._not_found.pop(r.key, None)
        return True

    def _unknown_status(self, row: RedemptionRow, event: rd.RedeemAnswered | rd.RedeemStatusSeen,
                        after: rd.Redemption) -> None:
        call = "redeem" if isinstance(event, rd.RedeemAnswered) else "status"
        self.unknown_statuses += 1
        _UNKNOWN.add(1, {"call": call})
        log.warning("redemption answer with a status word the contract does not list",
                    extra={"redemption_key": row.redemption.key, "call": call, "status": event.status[:100],
                           "redeem_id": after.redeem_id, "read_as": after.state.value})

    async def _store_many(self, changes: list[tuple[RedemptionRow, rd.Redemption]]) -> None:
        """Store the changes (one transaction), then count, log and publish the ones that ended or moved, and alert
        the runs of failures that crossed their bound (once stored: a restart reads the crossing and does not alert
        it again; a change not stored crosses again at its next failure)."""
        if not changes:
            return
        await self.store.save_many(changes, "executor.Redeem")
        for row, after in changes:
            if _crossed(row.redemption, after):
                self._overdue(row, after)
            if not after.state.terminal:
                continue
            _ENDED.add(1, {"state": after.state.value, "reason": after.reason})
            if after.state is rd.RedemptionState.FAILED:
                redemption_failed(row, after)
            (log.error if after.state is rd.RedemptionState.FAILED else log.info)(
                "redemption ended", extra={"redemption_key": after.key, "state": after.state.value,
                                           "reason": after.reason, "detail": after.detail,
                                           "wallet_id": row.follower_wallet_id, "condition_id": row.condition_id,
                                           "attempts": after.attempts, "tx_hash": after.tx_hash})
        await self._publish([(row, after) for row, after in changes if after.state != row.redemption.state])

    def _overdue(self, row: RedemptionRow, after: rd.Redemption) -> None:
        call = "status" if after.state is rd.RedemptionState.SUBMITTED else "redeem"
        self.overdue_alerts += 1
        _OVERDUE.add(1, {"call": call})
        redemption_overdue(row, after, call, self.retry.overdue_spacing_ms / 1000)

    async def _publish(self, changes: list[tuple[RedemptionRow, rd.Redemption]]) -> None:
        if not changes:
            return
        now = time.time_ns()
        try:
            await self.events.append_many([redemption_event(row, r, now).SerializeToString() for row, r in changes])
            await self.store.mark_published([(r.key, r.state) for _, r in changes])
        except Exception as exc:  # noqa: BLE001 - publish_pending appends them later
            log.warning("redemption events not appended yet", extra={"count": len(changes),
                                                                      "error": repr(exc)[:200]})

    async def publish_pending(self) -> int:
        """Append the events of redemptions whose current state is not on the log yet."""
        rows = await self.store.unpublished()
        await self._publish([(row, row.redemption) for row, _updated in rows])
        return len(rows)


def _crossed(before: rd.Redemption, after: rd.Redemption) -> bool:
    """Whether ``after`` is the change that made its run of failures (or its wait) overdue (its crossing)."""
    return rd.in_run(after) and after.overdue_since_ms > 0 and not (rd.in_run(before) and before.overdue_since_ms > 0)


def _asking(row: RedemptionRow, terms: tuple[Decimal, tuple[Decimal, ...]] | None) -> RedemptionRow:
    """``row`` with the shares and amounts stored with its attempt (as read, when not found)."""
    return row if terms is None else replace(row, shares=terms[0], amounts=terms[1])


def _with(row: RedemptionRow, r: rd.Redemption) -> RedemptionRow:
    """``row`` holding ``r``."""
    return replace(row, redemption=r)
