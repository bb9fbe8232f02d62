"""A SUBMITTED redemption's wait for its final status (pure): measured from when the venue took it, overdue once (its
crossing alerted) when its status queries still answer a status that is not final past the age bound, or fail."""

from __future__ import annotations

import pytest

from common.retry import Backoff
from services.executor.domain import redemption as rd
from services.executor.domain.redemption_retry import Bound, RetryPolicy, after_answer, after_failure

P = RetryPolicy(Backoff(1.0, 8.0), overdue_failures=5, overdue_ms=60_000)
S = rd.RedemptionState
TAKEN = 10_000


def _submitted(**kw: object) -> rd.Redemption:
    r = rd.apply(rd.Redemption("rk"), rd.RedeemAnswered("rd_1", "submitted", now_ms=TAKEN))
    return rd.apply(r, rd.RedeemStatusSeen("submitted", now_ms=TAKEN + 2_000)) if not kw else r


def _seen(r: rd.Redemption, status: str, now: int) -> rd.Redemption:
    return rd.apply(r, after_answer(P, r, rd.RedeemStatusSeen(status, now_ms=now)))


def test_the_wait_starts_when_the_venue_takes_it_whatever_the_posts_run_left() -> None:
    r = rd.Redemption("rk", failures=7, failing_since_ms=1_000, overdue_since_ms=2_000, reason=rd.OVERDUE)
    r = rd.apply(r, rd.RedeemAnswered("rd_1", "submitted", now_ms=TAKEN))
    assert (r.state, r.failures, r.failing_since_ms, r.overdue_since_ms, r.reason) == (S.SUBMITTED, 0, TAKEN, 0, "")
    assert rd.in_run(r)


@pytest.mark.parametrize(("status", "now", "overdue"), [
    ("submitted", TAKEN + 59_999, False),  # within the bound
    ("submitted", TAKEN + 60_000, True),  # at it
    ("pending", TAKEN + 900_000, True),  # a word the contract does not list reads as submitted
    ("confirmed", TAKEN + 900_000, False),  # final: ends it
    ("failed", TAKEN + 900_000, False),
])
def test_a_status_not_final_past_the_bound_is_the_waits_crossing(status: str, now: int, overdue: bool) -> None:
    event = after_answer(P, _submitted(), rd.RedeemStatusSeen(status, now_ms=now))
    assert isinstance(event, rd.RedeemWaitOverdue) is overdue
    if overdue:
        assert isinstance(event, rd.RedeemWaitOverdue) and "crossed its bound of 60 s" in event.detail


def test_an_overdue_wait_stays_submitted_and_never_crosses_again() -> None:
    r = _seen(_submitted(), "submitted", TAKEN + 60_000)
    assert (r.state, r.failing_since_ms, r.overdue_since_ms, r.reason) == (S.SUBMITTED, TAKEN, TAKEN + 60_000,
                                                                           rd.OVERDUE)
    for now in (TAKEN + 70_000, TAKEN + 10_000_000):
        assert isinstance(after_answer(P, r, rd.RedeemStatusSeen("submitted", now_ms=now)), rd.RedeemStatusSeen)
        r = _seen(r, "submitted", now)
        assert (r.overdue_since_ms, r.reason) == (TAKEN + 60_000, rd.OVERDUE)
    step = after_failure(P, failures=0, failing_since_ms=r.failing_since_ms, overdue_since_ms=r.overdue_since_ms,
                         now_ms=TAKEN + 20_000_000, rand=0.0, waiting=True)
    assert step.crossed is None and step.overdue_since_ms == TAKEN + 60_000  # a failure later: not a new crossing
    r = _seen(r, "confirmed", TAKEN + 20_000_000)
    assert (r.state, r.reason) == (S.CONFIRMED, "")


def test_answers_within_the_bound_keep_the_waits_start() -> None:
    r = _submitted()
    r = rd.apply(r, rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", TAKEN + 5_000, 400))
    assert (r.failures, r.failing_since_ms) == (1, TAKEN)
    r = _seen(r, "submitted", TAKEN + 6_000)
    assert (r.failures, r.failing_since_ms, r.overdue_since_ms, r.reason) == (0, TAKEN, 0, "")


def test_a_status_query_failing_past_the_waits_bound_crosses_it() -> None:
    r = _submitted()
    step = after_failure(P, failures=r.failures, failing_since_ms=r.failing_since_ms,
                         overdue_since_ms=r.overdue_since_ms, now_ms=TAKEN + 60_000, rand=0.0, waiting=True)
    assert (step.crossed, step.failing_since_ms, step.overdue_since_ms) == (Bound.AGE, TAKEN, TAKEN + 60_000)


def test_a_row_stored_before_the_wait_was_kept_dates_it_at_its_next_answer() -> None:
    r = rd.Redemption("rk", state=S.SUBMITTED, redeem_id="rd_1")  # failing_since unknown
    assert isinstance(after_answer(P, r, rd.RedeemStatusSeen("submitted", now_ms=900_000)), rd.RedeemStatusSeen)
    r = _seen(r, "submitted", 900_000)
    assert (r.failing_since_ms, r.overdue_since_ms) == (900_000, 0)
    assert isinstance(after_answer(P, r, rd.RedeemStatusSeen("submitted", now_ms=960_000)), rd.RedeemWaitOverdue)


def test_an_ended_redemption_cannot_wait_overdue() -> None:
    with pytest.raises(rd.IllegalTransition):
        rd.apply(rd.Redemption("rk", state=S.CONFIRMED), rd.RedeemWaitOverdue(rd.RedeemStatusSeen("submitted"), ""))
