"""A redemption's life (pure): one transition table, immutable past-tense events, ``apply`` the only mutator.

::

    PENDING ──RedeemSent──> PENDING (attempts + 1; the intent is recorded before every POST)
       │  ├──RedeemRetryable──> PENDING (next attempt after a backoff: 425/429/5xx, timeout, breaker)
       │  ├──RedeemAnswered(submitted)──> SUBMITTED ──RedeemStatusSeen(confirmed)──> CONFIRMED
       │  ├──RedeemAnswered(confirmed)──> CONFIRMED        └──RedeemStatusSeen(failed)──> FAILED
       │  └──RedeemRefused (a final 4xx) / RedeemAnswered(failed)──> FAILED
       SUBMITTED ──RedeemRetryable──> SUBMITTED (the status query failed: asked again later)

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


@dataclass(frozen=True, slots=True)
class RedeemStatusSeen:
    """A status query (``GET /v1/redeem/{id}``) answered."""

    status: str  # submitted | confirmed | failed (another word: still submitted)
    tx_hash: str = ""
    payout_usd: Decimal | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class RedeemRetryable:
    """A call failed in a way worth retrying (425, 429, 5xx, a timeout, no connection, the breaker refusing);
    ``delay_ms`` until the next try."""

    reason: str
    detail: str
    now_ms: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class RedeemRefused:
    """The venue refused for good (a 4xx such as NOTHING_TO_REDEEM or MARKET_NOT_RESOLVED)."""

    reason: str
    detail: str


Event = RedeemSent | RedeemAnswered | RedeemStatusSeen | RedeemRetryable | RedeemRefused

S = RedemptionState
_ANSWER = {"submitted": S.SUBMITTED, "confirmed": S.CONFIRMED, "failed": S.FAILED}


def known_status(status: str) -> bool:
    """Whether ``status`` is one of the words the contract lists (submitted, confirmed, failed)."""
    return status in _ANSWER


# (state, event type) → allowed; the target state comes from the event where it carries one.
TRANSITIONS: dict[tuple[RedemptionState, type[Any]], str] = {
    (S.PENDING, RedeemSent): "sent",
    (S.PENDING, RedeemRetryable): "retry",
    (S.PENDING, RedeemAnswered): "answered",
    (S.PENDING, RedeemRefused): "refused",
    (S.SUBMITTED, RedeemStatusSeen): "status",
    (S.SUBMITTED, RedeemRetryable): "retry",
    (S.SUBMITTED, RedeemAnswered): "answered",  # a replayed POST after a restart answers the same redemption
}


def apply(r: Redemption, event: Event) -> Redemption:
    """The redemption after ``event``; raises :class:`IllegalTransition` for a move the table forbids."""
    kind = TRANSITIONS.get((r.state, type(event)))
    if kind is None:
        raise IllegalTransition(f"{type(event).__name__} in state {r.state.value}")
    if isinstance(event, RedeemSent):
        return replace(r, attempts=r.attempts + 1, next_attempt_ms=event.now_ms)
    if isinstance(event, RedeemRetryable):
        return replace(r, failures=r.failures + 1, next_attempt_ms=event.now_ms + event.delay_ms,
                       reason=event.reason, detail=event.detail)
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
        return replace(r, state=state, redeem_id=event.redeem_id or r.redeem_id, tx_hash=event.tx_hash or r.tx_hash,
                       payout_usd=event.payout_usd if event.payout_usd is not None else r.payout_usd, failures=0,
                       reason="REDEMPTION_FAILED" if state is S.FAILED else "",
                       detail=event.error if state is S.FAILED else "")
    assert isinstance(event, RedeemStatusSeen)
    state = _ANSWER.get(event.status, S.SUBMITTED)
    return replace(r, state=state, tx_hash=event.tx_hash or r.tx_hash,
                   payout_usd=event.payout_usd if event.payout_usd is not None else r.payout_usd, failures=0,
                   reason="REDEMPTION_FAILED" if state is S.FAILED else "",
                   detail=event.error if state is S.FAILED else "")


RETRYABLE_HTTP = frozenset({425, 429})


def retryable_status(http_status: int) -> bool:
    """425, 429 and 5xx are retried with the same key; any other 4xx is final."""
    return http_status in RETRYABLE_HTTP or http_status >= 500


def retry_delay_ms(r: Redemption, backoff: Backoff, rand: float) -> int:
    """How long after its latest failure a redemption is tried again."""
    return int(backoff.delay(r.failures, rand) * 1000)
