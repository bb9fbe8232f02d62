"""How a failing redemption is retried, and when it is overdue (pure: time and randomness are passed in).

A redemption call that fails in a way worth retrying (a 408, 425, 429 or 5xx, a 409 naming no final refusal, a timeout,
no connection, an unreadable answer, the breaker open) is tried again with the same Idempotency-Key after an exponential
backoff with jitter, for as long as it takes: the key makes every retry safe (the venue redeems once), and a redemption
no longer tried would leave its winnings unredeemed after the venue is back, until a person acts.

A run of failures in a row is *overdue* from its crossing: its :attr:`RetryPolicy.overdue_failures`-th failure, or
its first failure at or past :attr:`RetryPolicy.overdue_ms` after the run's first, whichever comes first. The
crossing is alerted once (the redemption stores when its run became overdue: a later failure, or one after a
restart, is not a crossing), and from it on the run is retried at the backoff's maximum spacing. Before it, no retry
is scheduled past the run's age bound, so the crossing comes within it. An answer that is not a retryable failure
ends the run; the next run starts afresh and crosses on its own.

A SUBMITTED redemption's wait for its final status is a run too, from when the venue took it: its status queries'
failures count in it (a ``submitted`` answer resets their count, not its start), and a status query answering a
status that is not final at or past :attr:`RetryPolicy.overdue_ms` after it was taken is its crossing
(:func:`after_answer`): a venue that keeps answering ``submitted`` is alerted once, as one that keeps failing is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from common.retry import Backoff
from services.executor.domain import redemption as rd

RETRY_BACKOFF = Backoff(1.0, 300.0)  # a redemption waits for no copy: retried patiently, up to five minutes apart
OVERDUE_FAILURES = 100  # about 6 h of the backoff's five-minute steps
OVERDUE_S = 6 * 3600.0  # a venue outage of hours is waited out in silence; a day of money not redeemed is not


class Bound(enum.StrEnum):
    """The bound a run of failures crossed."""

    FAILURES = "failures"
    AGE = "age"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The backoff between tries and the bounds past which a run of failures is overdue."""

    backoff: Backoff = RETRY_BACKOFF
    overdue_failures: int = OVERDUE_FAILURES
    overdue_ms: int = int(OVERDUE_S * 1000)

    def __post_init__(self) -> None:
        if self.overdue_failures < 1 or self.overdue_ms < 0:
            raise ValueError("overdue_failures must be >= 1 and overdue_ms >= 0")

    @property
    def overdue_spacing_ms(self) -> int:
        """How far apart an overdue run is tried: the backoff's maximum."""
        return int(self.backoff.cap_s * 1000)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again at ``at_ms``. The run: ``failures`` in a row (this one counted) since ``failing_since_ms``,
    overdue since ``overdue_since_ms`` (0: not); ``crossed``: the bound this very failure crossed (None: none, or
    the run crossed before)."""

    at_ms: int
    failures: int
    failing_since_ms: int
    overdue_since_ms: int = 0
    crossed: Bound | None = None
    waiting: bool = False  # the run is a SUBMITTED redemption's wait (its start: when the venue took it)


def after_failure(policy: RetryPolicy, *, failures: int, failing_since_ms: int, overdue_since_ms: int, now_ms: int,
                  rand: float, at_least_ms: int = 0, waiting: bool = False) -> Retry:
    """What follows a failure at ``now_ms``, ``failures`` failures in a row before it (0: it begins a run, and the
    run's stored start and overdue mark are not read, unless ``waiting``: the redemption is SUBMITTED, its run the
    wait since it was taken; a start of 0: not known, a row stored before it was, so the run is dated now); ``rand``
    uniform in [0, 1) jitters the backoff; ``at_least_ms``: wait no less (the breaker's reopening)."""
    running = failures > 0 or waiting
    since = failing_since_ms if running and failing_since_ms > 0 else now_ms
    n = max(failures, 0) + 1
    spaced = now_ms + max(at_least_ms, policy.overdue_spacing_ms)
    if running and overdue_since_ms > 0:
        return Retry(spaced, n, since, overdue_since_ms, waiting=waiting)
    crossed = (Bound.FAILURES if n >= policy.overdue_failures
               else Bound.AGE if now_ms - since >= policy.overdue_ms else None)
    if crossed is not None:
        return Retry(spaced, n, since, now_ms, crossed, waiting)
    delay_ms = max(at_least_ms, int(policy.backoff.delay(n - 1, rand) * 1000))
    return Retry(min(now_ms + delay_ms, since + policy.overdue_ms), n, since, waiting=waiting)


def after_answer(policy: RetryPolicy, r: rd.Redemption,
                 seen: rd.RedeemStatusSeen) -> rd.RedeemStatusSeen | rd.RedeemWaitOverdue:
    """The event of a status query's answer ``seen`` (at ``seen.now_ms``) to SUBMITTED ``r``: the wait's crossing
    when the status is not final and ``r`` was taken at least the policy's age before, not overdue yet (a start of 0:
    not known, the wait is dated by this answer); else the answer as it came."""
    since = r.failing_since_ms
    if (rd.final_status(seen.status) or r.overdue_since_ms > 0 or since <= 0
            or seen.now_ms - since < policy.overdue_ms):
        return seen
    detail = (f"overdue: taken by the venue {(seen.now_ms - since) / 1000:.1f} s ago and its status still "
              f"{seen.status[:40]!r}; crossed its bound of {policy.overdue_ms / 1000:g} s; asked every "
              f"{policy.overdue_spacing_ms / 1000:g} s")
    return rd.RedeemWaitOverdue(seen, detail[:300])


def overdue_detail(policy: RetryPolicy, step: Retry, failed: rd.RedeemRetryable) -> str:
    """An overdue redemption's ``detail``: its run, the bound it crossed (at the crossing), its last failure."""
    span_s = (failed.now_ms - step.failing_since_ms) / 1000
    run = f"taken by the venue {span_s:.1f} s ago, {step.failures} failures in a row" if step.waiting else \
        f"{step.failures} failures in a row over {span_s:.1f} s"
    crossed = ""
    if step.crossed is Bound.FAILURES:
        crossed = f"; crossed its bound of {policy.overdue_failures} failures"
    elif step.crossed is Bound.AGE:
        crossed = f"; crossed its bound of {policy.overdue_ms / 1000:g} s"
    return (f"overdue: {run}{crossed}; retried every "
            f"{policy.overdue_spacing_ms / 1000:g} s; the last: {failed.reason}: {failed.detail}")[:300]


def retry_event(policy: RetryPolicy, step: Retry, failed: rd.RedeemRetryable) -> rd.RedeemRetryable | rd.RedeemOverdue:
    """The event of a retryable failure as ``step`` (:func:`after_failure`) has it: the crossing (alerted), a failure
    of an overdue run (its reason still overdue), or the failure as it came, each scheduled at ``step.at_ms``."""
    delay_ms = step.at_ms - failed.now_ms
    if not step.overdue_since_ms:
        return replace(failed, delay_ms=delay_ms)
    detail = overdue_detail(policy, step, failed)
    if step.crossed is not None:
        return rd.RedeemOverdue(rd.OVERDUE, detail, failed.now_ms, delay_ms)
    return rd.RedeemRetryable(rd.OVERDUE, detail, failed.now_ms, delay_ms)
