"""A redemption's life (pure): one transition table, immutable past-tense events, ``apply`` the only mutator.

::

    PENDING ──RedeemSent──> PENDING (attempts + 1; the intent is recorded before every POST)
       │  ├──RedeemRetryable──> PENDING (after a backoff: 408/425/429/5xx, a 409 naming no final refusal,
       │  │                              timeout, breaker)
       │  ├──RedeemOverdue──> PENDING (a run of failures crossed its bound: alerted once, retried on;
       │  │                            :mod:`.redemption_retry`)
       │  ├──RedeemAnswered(submitted)──> SUBMITTED ──RedeemStatusSeen(confirmed)──> CONFIRMED
       │  ├──RedeemAnswered(confirmed)──> CONFIRMED        └──RedeemStatusSeen(failed)──> FAILED
       │  └──RedeemRefused (a final 4xx) / RedeemAnswered(failed)──> FAILED
       SUBMITTED ──RedeemRetryable──> SUBMITTED (the status query failed: asked again later)
       SUBMITTED ──RedeemOverdue──> SUBMITTED (the same for its status queries)
       SUBMITTED ──RedeemWaitOverdue──> SUBMITTED (still not final past its bound from its submission: alerted once)

A run of retryable failures is never given up (every retry carries the same Idempotency-Key, so it is always safe,
and a redemption ended FAILED leaves its winnings unredeemed after the venue is back, until a person acts): once
overdue it is alerted once and retried on (reason ``REDEMPTION_OVERDUE``); an answer ends the run.

A SUBMITTED redemption waits for its final status from when the venue took it (``failing_since_ms``, kept through its
status queries' answers and failures): a wait past its bound is overdue too, once (``overdue_since_ms``), whether its
status queries fail or keep answering ``submitted`` (the winnings may never arrive); it is still asked about.

A status word the contract does not list (``pending``, ``mined``...) is read as ``submitted`` wherever there is a
redemption to follow: on a status query, and on a POST answer that names its ``redeemId`` (the venue took the
redemption; ``GET /v1/redeem/{id}`` says how it ends). A POST answer to follow (``submitted`` or an unknown word)
with no ``redeemId``, none being known from before, ends FAILED (UNREADABLE_ANSWER), which raises the redemption
alert: there is nothing to ask about (it was asked for ``GET /v1/redeem/`` for ever), and posting again with the
same Idempotency-Key would only replay that first answer.

Every POST of one redemption carries the same Idempotency-Key, so the venue redeems once however often it is
sent (a retry, a restart between the POST and recording its answer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from common.retry import Backoff


class RedemptionState(enum.Enum):
    """Where a redemption is."""

    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """True for states a redemption never leaves."""
        return self in (RedemptionState.CONFIRMED, RedemptionState.FAILED)


class IllegalTransition(Exception):
    """An event the redemption's current state does not allow."""


@dataclass(frozen=True, slots=True)
class Redemption:
    """What is known of one redemption."""

    key: str
    state: RedemptionState = RedemptionState.PENDING
    attempts: int = 0
    redeem_id: str = ""
    tx_hash: str = ""
    payout_usd: Decimal | None = None
    reason: str = ""
    detail: str = ""
    next_attempt_ms: int = 0
    failures: int = 0  # retryable failures in a row (the backoff's attempt number)
    # when the first of those failures came; SUBMITTED: when the venue took it (its wait for a final status; 0: not
    # known). Read only while :func:`in_run`.
    failing_since_ms: int = 0
    overdue_since_ms: int = 0  # when that run (or wait) crossed its bound (0: it did not; read only while in_run)


@dataclass(frozen=True, slots=True)
class RedeemSent:
    """A POST is about to leave (recorded first, so a crash cannot hide that it may have reached the venue)."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class RedeemAnswered:
    """The venue answered the POST with a redemption."""

    redeem_id: str
    status: str  # submitted | confirmed | failed (another word: see the module docstring)
    tx_hash: str = ""
    payout_usd: Decimal | None = None
    error: str = ""
    now_ms: int = 0  # when it came (0: not known)


@dataclass(frozen=True, slots=True)
class RedeemStatusSeen:
    """A status query (``GET /v1/redeem/{id}``) answered."""

    status: str  # submitted | confirmed | failed (another word: still submitted)
    tx_hash: str = ""
    payout_usd: Decimal | None = None
    error: str = ""
    now_ms: int = 0  # when it came (0: not known)


@dataclass(frozen=True, slots=True)
class RedeemWaitOverdue:
    """A status query answered a status that is not final past the wait's bound: its crossing (alerted once)."""

    seen: RedeemStatusSeen
    detail: str


@dataclass(frozen=True, slots=True)
class RedeemRetryable:
    """A call failed in a way worth retrying (425, 429, 5xx, a timeout, no connection, the breaker refusing);
    ``delay_ms`` until the next try."""

    reason: str
    detail: str
    now_ms: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class RedeemOverdue:
    """A retryable failure that made its run overdue (its crossing: alerted once); retried after ``delay_ms``."""

    reason: str
    detail: str
    now_ms: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class RedeemRefused:
    """The venue refused for good (a 4xx such as NOTHING_TO_REDEEM or MARKET_NOT_RESOLVED)."""

    reason: str
    detail: str


Event = (RedeemSent | RedeemAnswered | RedeemStatusSeen | RedeemRetryable | RedeemRefused | RedeemOverdue
         | RedeemWaitOverdue)

S = RedemptionState
_ANSWER = {"submitted": S.SUBMITTED, "confirmed": S.CONFIRMED, "failed": S.FAILED}


def known_status(status: str) -> bool:
    """Whether ``status`` is one of the words the contract lists (submitted, confirmed, failed)."""
    return status in _ANSWER


def final_status(status: str) -> bool:
    """Whether a status query answering ``status`` ends the redemption (confirmed, failed)."""
    return _ANSWER.get(status, S.SUBMITTED) is not S.SUBMITTED


def in_run(r: Redemption) -> bool:
    """Whether ``r``'s run marks (``failing_since_ms``, ``overdue_since_ms``) are live: a run of failures, or the
    wait of a SUBMITTED redemption for its final status."""
    return r.failures > 0 or r.state is S.SUBMITTED


# (state, event type) → allowed; the target state comes from the event where it carries one.
TRANSITIONS: dict[tuple[RedemptionState, type[Any]], str] = {
    (S.PENDING, RedeemSent): "sent",
    (S.PENDING, RedeemRetryable): "retry",
    (S.PENDING, RedeemAnswered): "answered",
    (S.PENDING, RedeemRefused): "refused",
    (S.SUBMITTED, RedeemStatusSeen): "status",
    (S.SUBMITTED, RedeemRetryable): "retry",
    (S.PENDING, RedeemOverdue): "overdue",
    (S.SUBMITTED, RedeemOverdue): "overdue",
    (S.SUBMITTED, RedeemWaitOverdue): "overdue",
    (S.SUBMITTED, RedeemAnswered): "answered",  # a replayed POST after a restart answers the same redemption
}


def apply(r: Redemption, event: Event) -> Redemption:
    """The redemption after ``event``; raises :class:`IllegalTransition` for a move the table forbids."""
    kind = TRANSITIONS.get((r.state, type(event)))
    if kind is None:
        raise IllegalTransition(f"{type(event).__name__} in state {r.state.value}")
    if isinstance(event, RedeemSent):
        return replace(r, attempts=r.attempts + 1, next_attempt_ms=event.now_ms)
    if isinstance(event, RedeemRetryable | RedeemOverdue):
        running = in_run(r)
        since = r.failing_since_ms if running and r.failing_since_ms > 0 else event.now_ms  # 0: unknown
        overdue = r.overdue_since_ms if running else 0
        if isinstance(event, RedeemOverdue) and not overdue:
            overdue = event.now_ms
        return replace(r, failures=r.failures + 1, failing_since_ms=since, overdue_since_ms=overdue,
                       next_attempt_ms=event.now_ms + event.delay_ms, reason=event.reason, detail=event.detail)
    if isinstance(event, RedeemRefused):
        return replace(r, state=S.FAILED, reason=event.reason, detail=event.detail)
    if isinstance(event, RedeemAnswered):
        state = _ANSWER.get(event.status)
        if state in (None, S.SUBMITTED) and not event.redeem_id and not r.redeem_id:
            # nothing to follow, and a replayed POST answers the same: an operator must look (the alert)
            return replace(r, state=S.FAILED, redeem_id=event.redeem_id, reason="UNREADABLE_ANSWER",
                           detail=f"status {event.status[:100]!r} without a redeemId")
        if state is None:  # the venue took it under an unlisted word: followed as submitted
            state = S.SUBMITTED
        if state is S.SUBMITTED and r.state is not S.SUBMITTED:  # taken now: its wait for a final status begins
            r = replace(r, failing_since_ms=event.now_ms, overdue_since_ms=0)
        return replace(r, state=state, redeem_id=event.redeem_id or r.redeem_id, tx_hash=event.tx_hash or r.tx_hash,
                       payout_usd=event.payout_usd if event.payout_usd is not None else r.payout_usd, failures=0,
                       reason="REDEMPTION_FAILED" if state is S.FAILED else "",
                       detail=event.error if state is S.FAILED else "")
    if isinstance(event, RedeemWaitOverdue):
        seen = apply(r, event.seen)
        return replace(seen, overdue_since_ms=seen.overdue_since_ms or event.seen.now_ms, reason=OVERDUE,
                       detail=event.detail)
    state = _ANSWER.get(event.status, S.SUBMITTED)
    if state is S.SUBMITTED:  # still waiting: since it was taken (or now, a row stored before that was kept)
        return replace(r, tx_hash=event.tx_hash or r.tx_hash, failures=0,
                       payout_usd=event.payout_usd if event.payout_usd is not None else r.payout_usd,
                       failing_since_ms=r.failing_since_ms or event.now_ms,
                       reason=OVERDUE if r.overdue_since_ms else "", detail=r.detail if r.overdue_since_ms else "")
    return replace(r, state=state, tx_hash=event.tx_hash or r.tx_hash,
                   payout_usd=event.payout_usd if event.payout_usd is not None else r.payout_usd, failures=0,
                   reason="REDEMPTION_FAILED" if state is S.FAILED else "",
                   detail=event.error if state is S.FAILED else "")


RETRYABLE_HTTP = frozenset({425, 429})
# Not the venue's verdict on the redemption: a timeout it answered (408); the key's first request still in progress
# (409, as a replay after our own timeout finds it): the same key, asked again, gets the redemption's answer.
UNDECIDED_HTTP = frozenset({408, 409})
OVERDUE = "REDEMPTION_OVERDUE"  # the reason of a redemption whose run of failures crossed its bound (retried on)


def retryable_status(http_status: int) -> bool:
    """The venue failing (425, 429, 5xx): retried with the same key, and a failure for the breaker."""
    return http_status in RETRYABLE_HTTP or http_status >= 500


# the contract's final refusals: a 409 naming one is the venue's verdict, not a request in progress
FINAL_CODES = frozenset({"NOTHING_TO_REDEEM", "MARKET_NOT_RESOLVED"})


def retried_status(http_status: int, code: str = "") -> bool:
    """Whether a POST answered ``http_status`` (with error ``code``) is retried with the same key (the venue
    failing, or a 408/409 but a 409 naming a final refusal); any other 4xx is final."""
    if http_status == 409 and code.upper() in FINAL_CODES:
        return False
    return retryable_status(http_status) or http_status in UNDECIDED_HTTP


def retry_delay_ms(r: Redemption, backoff: Backoff, rand: float) -> int:
    """How long after its latest failure a redemption is tried again."""
    return int(backoff.delay(r.failures, rand) * 1000)
