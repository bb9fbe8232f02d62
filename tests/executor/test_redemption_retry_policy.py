"""The retries of a failing redemption (pure, table-driven): exponential backoff with jitter, never given up; a run
of failures becomes overdue once, at its N-th failure in a row or its first failure at or past its age, whichever
comes first, and is retried from then on at the backoff's maximum spacing."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from common.retry import Backoff
from services.executor.config import Settings, Tuning
from services.executor.domain import redemption as rd
from services.executor.domain.redemption_retry import (
    OVERDUE_FAILURES,
    OVERDUE_S,
    Bound,
    Retry,
    RetryPolicy,
    after_failure,
    overdue_detail,
    retry_event,
)
from services.executor.redeeming import redeem_retry
from tests.helpers import INTERNAL_ENV

P = RetryPolicy(Backoff(1.0, 8.0), overdue_failures=5, overdue_ms=60_000)
AGE, COUNT = Bound.AGE, Bound.FAILURES


@pytest.mark.parametrize(("failures", "since", "overdue", "now", "rand", "at_least", "expected"), [
    # a run begins: its start is now (a stale start or overdue mark is not read), the backoff's first step
    (0, 0, 0, 10_000, 0.0, 0, Retry(10_500, 1, 10_000)),
    (0, 123, 456, 10_000, 0.999, 0, Retry(10_999, 1, 10_000)),
    # a run whose start is not known (stored before it was kept) is dated now, not at the epoch
    (3, 0, 0, 10_000, 0.0, 0, Retry(14_000, 4, 10_000)),
    # doubling, jittered by rand, capped at 8 s
    (1, 10_000, 0, 11_000, 0.0, 0, Retry(12_000, 2, 10_000)),
    (2, 10_000, 0, 13_000, 0.5, 0, Retry(16_000, 3, 10_000)),
    (3, 10_000, 0, 17_000, 1.0, 0, Retry(25_000, 4, 10_000)),
    # the breaker's reopening is waited for
    (1, 10_000, 0, 11_000, 0.0, 30_000, Retry(41_000, 2, 10_000)),
    # not overdue yet: never scheduled past the run's age, the try there is the crossing one
    (3, 10_000, 0, 69_000, 1.0, 0, Retry(70_000, 4, 10_000)),
    (1, 10_000, 0, 11_000, 0.0, 600_000, Retry(70_000, 2, 10_000)),
    # the 5th failure in a row crosses (whatever the age): alerted, retried at the maximum spacing (8 s)
    (4, 10_000, 0, 12_000, 0.0, 0, Retry(20_000, 5, 10_000, 12_000, COUNT)),
    # the first failure at or past the run's age crosses (whatever the count)
    (1, 10_000, 0, 70_000, 0.0, 0, Retry(78_000, 2, 10_000, 70_000, AGE)),
    (2, 10_000, 0, 99_000, 0.3, 0, Retry(107_000, 3, 10_000, 99_000, AGE)),
    # both at once: one crossing (the count named)
    (4, 10_000, 0, 70_000, 0.0, 0, Retry(78_000, 5, 10_000, 70_000, COUNT)),
    # the breaker's reopening is waited for at the crossing too, not capped by the age
    (4, 10_000, 0, 12_000, 0.0, 30_000, Retry(42_000, 5, 10_000, 12_000, COUNT)),
    # overdue already: retried at the maximum spacing, never crossing again (not at the count, not at the age)
    (5, 10_000, 12_000, 20_000, 0.0, 0, Retry(28_000, 6, 10_000, 12_000)),
    (1, 10_000, 70_000, 78_000, 0.0, 0, Retry(86_000, 2, 10_000, 70_000)),
    (4, 10_000, 70_000, 86_000, 0.0, 0, Retry(94_000, 5, 10_000, 70_000)),
    (500, 10_000, 12_000, 9_000_000, 0.9, 100_000, Retry(9_100_000, 501, 10_000, 12_000)),
])
def test_after_a_failure(failures: int, since: int, overdue: int, now: int, rand: float, at_least: int,
                         expected: Retry) -> None:
    assert after_failure(P, failures=failures, failing_since_ms=since, overdue_since_ms=overdue, now_ms=now,
                         rand=rand, at_least_ms=at_least) == expected


def test_one_failure_allowed_makes_the_first_overdue() -> None:
    step = after_failure(RetryPolicy(overdue_failures=1), failures=0, failing_since_ms=0, overdue_since_ms=0,
                         now_ms=5, rand=0.0)
    assert step == Retry(300_005, 1, 5, 5, COUNT)


@pytest.mark.parametrize(("overdue_failures", "overdue_ms"), [(0, 1000), (1, -1)])
def test_a_policy_without_a_bound_is_refused(overdue_failures: int, overdue_ms: int) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(overdue_failures=overdue_failures, overdue_ms=overdue_ms)


@pytest.mark.parametrize("rand", [0.0, 0.3, 0.999])
@pytest.mark.parametrize("policy", [P, RetryPolicy(Backoff(1.0, 8.0), overdue_failures=1000, overdue_ms=60_000)])
def test_a_run_that_never_ends_crosses_once_and_is_retried_for_ever(rand: float, policy: RetryPolicy) -> None:
    """Whatever the jitter and the bound reached first: one crossing, within the bounds, then every 8 s for ever."""
    failures, since, overdue, now, crossings = 0, 0, 0, 1_000, []
    for _ in range(300):
        step = after_failure(policy, failures=failures, failing_since_ms=since, overdue_since_ms=overdue, now_ms=now,
                             rand=rand)
        assert step.failures == failures + 1
        if step.crossed is not None:
            crossings.append(step)
        if not step.overdue_since_ms:
            assert step.at_ms <= step.failing_since_ms + policy.overdue_ms
        else:
            assert step.at_ms - now == 8_000
        failures, since, overdue, now = step.failures, step.failing_since_ms, step.overdue_since_ms, step.at_ms
    [crossing] = crossings
    assert crossing.failures <= policy.overdue_failures
    assert crossing.overdue_since_ms - crossing.failing_since_ms <= policy.overdue_ms


def test_a_run_after_an_answer_crosses_on_its_own() -> None:
    r = rd.Redemption("rk")
    for n in range(7):  # a run: overdue at its 5th failure
        r = _failed(r, P, 1_000 + n)
    assert (r.failures, r.overdue_since_ms, r.reason) == (7, 1_004, rd.OVERDUE)
    r = rd.apply(r, rd.RedeemAnswered("rd_1", "submitted"))
    assert (r.state, r.failures, r.reason) == (rd.RedemptionState.SUBMITTED, 0, "")
    crossed = []
    for n in range(6):  # the next run, from its own start
        step = after_failure(P, failures=r.failures, failing_since_ms=r.failing_since_ms,
                             overdue_since_ms=r.overdue_since_ms, now_ms=5_000 + n, rand=0.0)
        crossed += [step.crossed] if step.crossed else []
        r = _failed(r, P, 5_000 + n)
    assert crossed == [COUNT] and (r.failing_since_ms, r.overdue_since_ms) == (5_000, 5_004)


def _failed(r: rd.Redemption, policy: RetryPolicy, now: int) -> rd.Redemption:
    step = after_failure(policy, failures=r.failures, failing_since_ms=r.failing_since_ms,
                         overdue_since_ms=r.overdue_since_ms, now_ms=now, rand=0.0)
    return rd.apply(r, retry_event(policy, step, rd.RedeemRetryable("VENUE_UNAVAILABLE", "HTTP 503", now, 0)))


def test_the_runs_start_is_kept_by_the_redemption_and_an_answer_ends_the_run() -> None:
    r = rd.apply(rd.Redemption("rk"), rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 1_000, 400))
    assert (r.failures, r.failing_since_ms, r.next_attempt_ms) == (1, 1_000, 1_400)
    r = rd.apply(r, rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 1_400, 800))
    assert (r.failures, r.failing_since_ms) == (2, 1_000)
    r = rd.apply(r, rd.RedeemAnswered("rd_1", "submitted"))
    assert r.failures == 0
    r = rd.apply(r, rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 9_000, 400))
    assert (r.failures, r.failing_since_ms) == (1, 9_000)


@pytest.mark.parametrize("state", [rd.RedemptionState.PENDING, rd.RedemptionState.SUBMITTED])
def test_an_overdue_run_stays_in_its_state_and_is_retried(state: rd.RedemptionState) -> None:
    r = rd.Redemption("rk", state=state, failures=4, failing_since_ms=1_000)
    r = rd.apply(r, rd.RedeemOverdue(rd.OVERDUE, "5 failures in a row", 9_000, 300_000))
    assert (r.state, r.failures, r.failing_since_ms, r.overdue_since_ms, r.next_attempt_ms, r.reason, r.detail) == \
        (state, 5, 1_000, 9_000, 309_000, rd.OVERDUE, "5 failures in a row")
    r = rd.apply(r, rd.RedeemRetryable(rd.OVERDUE, "6 failures in a row", 309_000, 300_000))
    assert (r.state, r.failures, r.overdue_since_ms, r.next_attempt_ms) == (state, 6, 9_000, 609_000)


@pytest.mark.parametrize("state", [rd.RedemptionState.CONFIRMED, rd.RedemptionState.FAILED])
def test_an_ended_redemption_cannot_become_overdue(state: rd.RedemptionState) -> None:
    with pytest.raises(rd.IllegalTransition):
        rd.apply(rd.Redemption("rk", state=state, failures=4), rd.RedeemOverdue(rd.OVERDUE, "", 9_000, 300_000))


def test_a_new_run_is_not_overdue_whatever_a_past_run_left() -> None:
    r = rd.Redemption("rk", failures=0, failing_since_ms=1_000, overdue_since_ms=2_000)
    r = rd.apply(r, rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 9_000, 400))
    assert (r.failures, r.failing_since_ms, r.overdue_since_ms) == (1, 9_000, 0)


def test_the_overdue_detail_says_why_and_the_last_failure() -> None:
    step = Retry(20_000, 5, 10_000, 12_000, COUNT)
    text = overdue_detail(P, step, rd.RedeemRetryable("VENUE_UNAVAILABLE", "HTTP 503", 12_000, 0))
    assert "5 failures in a row" in text and "every 8 s" in text and "VENUE_UNAVAILABLE: HTTP 503" in text


@pytest.mark.parametrize(("step", "expected"), [
    # not overdue: the failure as it came, scheduled as the policy says
    (Retry(10_500, 1, 10_000), rd.RedeemRetryable("VENUE_UNAVAILABLE", "HTTP 503", 10_000, 500)),
    # the crossing: its own event (alerted once), reason overdue
    (Retry(20_000, 5, 10_000, 12_000, COUNT), rd.RedeemOverdue(rd.OVERDUE, "*", 12_000, 8_000)),
    # overdue already: a plain retry, its reason still overdue
    (Retry(28_000, 6, 10_000, 12_000), rd.RedeemRetryable(rd.OVERDUE, "*", 20_000, 8_000)),
])
def test_the_event_a_failure_makes(step: Retry, expected: rd.RedeemRetryable | rd.RedeemOverdue) -> None:
    now = step.overdue_since_ms if step.crossed else 20_000 if step.overdue_since_ms else 10_000
    failed = rd.RedeemRetryable("VENUE_UNAVAILABLE", "HTTP 503", now, 0)
    event = retry_event(P, step, failed)
    assert type(event) is type(expected)
    assert (event.reason, event.now_ms, event.delay_ms) == (expected.reason, expected.now_ms, expected.delay_ms)
    assert event.detail == (overdue_detail(P, step, failed) if step.overdue_since_ms else "HTTP 503")


@pytest.mark.parametrize(("status", "code", "retry"), [
    (408, "", True), (409, "", True), (409, "IDEMPOTENCY_KEY_IN_USE", True), (425, "", True), (429, "", True),
    (500, "", True), (503, "", True), (400, "", False), (401, "", False), (403, "", False), (404, "", False),
    (422, "", False),
    # a 409 naming one of the contract's final refusals is the venue's verdict
    (409, "NOTHING_TO_REDEEM", False), (409, "MARKET_NOT_RESOLVED", False),
])
def test_which_answers_to_a_redemption_post_are_retried(status: int, code: str, retry: bool) -> None:
    assert rd.retried_status(status, code) is retry


def test_the_tuning_defaults_are_the_policys() -> None:
    t = Tuning()
    assert (t.redeem_overdue_failures, t.redeem_overdue_s) == (OVERDUE_FAILURES, OVERDUE_S)
    assert RetryPolicy() == RetryPolicy(overdue_failures=OVERDUE_FAILURES, overdue_ms=int(OVERDUE_S * 1000))
    assert RetryPolicy().overdue_spacing_ms == 300_000


def test_a_row_stored_before_the_runs_start_was_kept_dates_its_run_at_its_next_failure() -> None:
    r = rd.apply(rd.Redemption("rk", failures=7), rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 9_000, 400))
    assert (r.failures, r.failing_since_ms) == (8, 9_000)


def test_the_tuned_bounds_reach_the_redeemers_policy() -> None:
    settings = Settings.from_env({**INTERNAL_ENV, "TT_TUNE_EXECUTOR_REDEEM_OVERDUE_FAILURES": "7",
                                  "TT_TUNE_EXECUTOR_REDEEM_OVERDUE_S": "90"})
    assert redeem_retry(settings) == RetryPolicy(overdue_failures=7, overdue_ms=90_000)


@pytest.mark.parametrize(("name", "value"), [("REDEEM_OVERDUE_FAILURES", "0"), ("REDEEM_OVERDUE_S", "0.5")])
def test_bounds_that_would_alert_at_once_are_refused_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({**INTERNAL_ENV, f"TT_TUNE_EXECUTOR_{name}": value})
