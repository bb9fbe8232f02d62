"""Redeeming winning shares through the Insiders API: each recorded redemption is POSTed with its
Idempotency-Key (the attempt recorded first), retried on 425/429/5xx and timeouts with backoff behind the venue's
circuit breaker, and followed through ``GET /v1/redeem/{id}`` until confirmed; a final 4xx ends it FAILED with
the reason. Every change is stored with its audit-log row and appended to ``tt:stream:redemption_events`` (an
outbox: what failed to append after the commit is appended by the next round). Resumes after any restart from
PostgreSQL. With auto-redeem off, redemptions are recorded but not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

from opentelemetry import metrics

from common.decimals import fmt
from common.ids import hash_id
from common.retry import Backoff
from common.streams import DurableLog
from services.executor.adapters.breaker_gate import BreakerGate
from services.executor.adapters.insiders_api import parse_redemption
from services.executor.adapters.redemption_store import RedemptionRow, RedemptionStore
from services.executor.alerting import redemption_failed
from services.executor.domain import redemption as rd
from services.executor.ports import Answer, RedeemApi
from tradingtools.execution.v1 import execution_pb2 as epb

log = logging.getLogger(__name__)
_meter = metrics.get_meter("tradingtools.executor")
_CALLS = _meter.create_counter("executor.redeem_calls", description="Redemption calls, by call and outcome")
_ENDED = _meter.create_counter("executor.redemptions", description="Redemptions ended, by state and reason")

RETRY_BACKOFF = Backoff(1.0, 300.0)  # a redemption waits for no copy: retried patiently, for as long as it takes

EVENT_TYPES = {rd.RedemptionState.PENDING: epb.REDEMPTION_EVENT_TYPE_PENDING,
               rd.RedemptionState.SUBMITTED: epb.REDEMPTION_EVENT_TYPE_SUBMITTED,
               rd.RedemptionState.CONFIRMED: epb.REDEMPTION_EVENT_TYPE_CONFIRMED,
               rd.RedemptionState.FAILED: epb.REDEMPTION_EVENT_TYPE_FAILED}


def outcome_of(answer: Answer, *, status_query: bool, now_ms: int, delay_ms: int) -> rd.Event:
    """The redemption event a venue answer makes."""
    if answer.status == 200 and answer.body is not None:
        try:
            view = parse_redemption(answer.body)
        except (ValueError, ArithmeticError) as exc:
            return rd.RedeemRetryable("UNREADABLE_ANSWER", repr(exc)[:200], now_ms, delay_ms)
        if status_query:
            return rd.RedeemStatusSeen(view.status, view.tx_hash, view.payout_usd, view.error)
        return rd.RedeemAnswered(view.redeem_id, view.status, view.tx_hash, view.payout_usd, view.error)
    if answer.status == 0:
        return rd.RedeemRetryable("VENUE_UNAVAILABLE", f"{answer.kind}: {answer.message}"[:300], now_ms, delay_ms)
    if rd.retryable_status(answer.status) or status_query:  # a status query's 4xx is asked again later
        return rd.RedeemRetryable("VENUE_UNAVAILABLE", f"HTTP {answer.status} {answer.code}"[:300], now_ms, delay_ms)
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
                 *, enabled: bool = True, backoff: Backoff = RETRY_BACKOFF, poll_s: float = 2.0,
                 max_concurrent: int = 16, rng: random.Random | None = None,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        _ENDED.add(0, {"state": rd.RedemptionState.FAILED.value, "reason": ""})  # exported from the start (a rule)
        self.store = store
        self.api = api
        self.gate = gate
        self.events = events
        self.enabled = enabled and api is not None
        self.backoff = backoff
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self.clock_ms = clock_ms
        self._slots = asyncio.Semaphore(max_concurrent)
        self._wake = asyncio.Event()
        self.posts = 0

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
                log.exception("redemption round failed")
                delay = self.poll_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, delay))

    async def round(self) -> int:
        """Run every due redemption once (a few at a time); returns how many."""
        due = await self.store.due(self.clock_ms())
        await asyncio.gather(*(self._guarded(row) for row in due))
        return len(due)

    async def _guarded(self, row: RedemptionRow) -> None:
        async with self._slots:
            try:
                await self.step(row)
            except asyncio.CancelledError:
                raise
            except Exception:  # one redemption failing must not stop the others
                log.exception("redemption step failed", extra={"redemption_key": row.redemption.key})

    async def step(self, row: RedemptionRow) -> rd.Redemption:
        """One call for one redemption: its POST (PENDING) or its status query (SUBMITTED)."""
        assert self.api is not None
        r = row.redemption
        now = self.clock_ms()
        delay = rd.retry_delay_ms(r, self.backoff, self.rng.random())
        admission = self.gate.admit() if self.gate is not None else None
        if admission is not None and not admission.allowed:
            assert self.gate is not None
            wait_ms = max(delay, int(self.gate.reopens_in_s() * 1000))
            return await self._save(row, r, rd.RedeemRetryable("BREAKER_OPEN", "the venue's breaker is open", now,
                                                               wait_ms), "executor.Redeem")
        if r.state is rd.RedemptionState.PENDING:
            sent = rd.apply(r, rd.RedeemSent(now))
            await self.store.save(row, sent, "executor.Redeem")  # the attempt is on record before it leaves
            row = RedemptionRow(sent, row.follower_wallet_id, row.wallet, row.condition_id, row.neg_risk,
                                row.amounts, row.shares, sent.attempts)
            self.posts += 1
            answer = await self.api.redeem(r.key, row.follower_wallet_id, row.condition_id, row.neg_risk,
                                           row.amounts)
            call, status_query = "redeem", False
        else:
            answer = await self.api.redemption(r.redeem_id)
            call, status_query = "status", True
        failed = answer.status == 0 or rd.retryable_status(answer.status)
        if self.gate is not None:
            self.gate.record(failure=failed)
        _CALLS.add(1, {"call": call, "outcome": "retryable" if failed else str(answer.status)})
        event = outcome_of(answer, status_query=status_query, now_ms=self.clock_ms(), delay_ms=delay)
        if isinstance(event, rd.RedeemAnswered | rd.RedeemStatusSeen) and event.status == "submitted":
            poll_ms = int(self.poll_s * 1000)
            after = replace(rd.apply(row.redemption, event), next_attempt_ms=self.clock_ms() + poll_ms)
            return await self._store(row, after, "executor.Redeem")
        return await self._save(row, row.redemption, event, "executor.Redeem")

    async def _save(self, row: RedemptionRow, r: rd.Redemption, event: rd.Event, method: str) -> rd.Redemption:
        return await self._store(row, rd.apply(r, event), method)

    async def _store(self, row: RedemptionRow, after: rd.Redemption, method: str) -> rd.Redemption:
        await self.store.save(row, after, method)
        if after.state.terminal:
            _ENDED.add(1, {"state": after.state.value, "reason": after.reason})
            if after.state is rd.RedemptionState.FAILED:
                redemption_failed(row, after)
            (log.error if after.state is rd.RedemptionState.FAILED else log.info)(
                "redemption ended", extra={"redemption_key": after.key, "state": after.state.value,
                                           "reason": after.reason, "detail": after.detail,
                                           "wallet_id": row.follower_wallet_id, "condition_id": row.condition_id,
                                           "attempts": after.attempts, "tx_hash": after.tx_hash})
        if after.state != row.redemption.state:
            await self._publish(row, after)
        return after

    async def _publish(self, row: RedemptionRow, r: rd.Redemption) -> None:
        try:
            await self.events.append(redemption_event(row, r, time.time_ns()).SerializeToString())
            await self.store.mark_published(r.key, r.state)
        except Exception as exc:  # noqa: BLE001 - publish_pending appends it later
            log.warning("redemption event not appended yet", extra={"redemption_key": r.key,
                                                                     "error": repr(exc)[:200]})

    async def publish_pending(self) -> int:
        """Append the events of redemptions whose current state is not on the log yet."""
        rows = await self.store.unpublished()
        for row, _updated in rows:
            await self._publish(row, row.redemption)
        return len(rows)

