"""Retry classification and the events each venue answer implies."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import (
    PLACED_NOT_FOUND,
    Classification,
    Missing,
    Verdict,
    accepted,
    classify,
    decide_placed_missing,
    decide_status,
    decide_submit,
    decide_unknown,
    missed,
)
from services.executor.domain.fill_math import fill_increment

D = Decimal
ORDER = v.VenueOrder("io_1", "co_1", "matched", D("10"), D("0.5"))


@pytest.mark.parametrize(("result", "verdict", "reason", "may_hold", "breaker", "invalidate"), [
    (ORDER, Verdict.OK, "", False, False, False),
    (v.VenueError("http", 425), Verdict.RETRY, "VENUE_TOO_EARLY", False, True, False),
    (v.VenueError("http", 429), Verdict.RETRY, "VENUE_RATE_LIMITED", False, True, False),
    (v.VenueError("http", 500), Verdict.RETRY, "VENUE_HTTP_500", True, True, False),
    (v.VenueError("http", 502), Verdict.RETRY, "VENUE_HTTP_502", True, True, False),
    (v.VenueError("http", 503, "SERVICE_UNAVAILABLE"), Verdict.RETRY, "VENUE_HTTP_503", True, True, False),
    (v.VenueError("timeout"), Verdict.SETTLE, "VENUE_TIMEOUT", True, True, False),
    (v.VenueError("disconnect"), Verdict.RETRY, "VENUE_DISCONNECTED", True, True, False),
    (v.VenueError("connect"), Verdict.RETRY, "VENUE_UNREACHABLE", False, True, False),
    (v.VenueError("protocol", 200), Verdict.SETTLE, "VENUE_BAD_RESPONSE", True, False, False),
    (v.VenueError("http", 400, "INVALID_ORDER_MIN_SIZE"), Verdict.REJECT, "INVALID_ORDER_MIN_SIZE", False, False, True),
    (v.VenueError("http", 400, "INVALID_ORDER_MIN_TICK_SIZE"), Verdict.REJECT, "INVALID_ORDER_MIN_TICK_SIZE", False,
     False, True),
    (v.VenueError("http", 400, "INVALID_ORDER_NOT_ENOUGH_BALANCE"), Verdict.REJECT, "INVALID_ORDER_NOT_ENOUGH_BALANCE",
     False, False, False),
    (v.VenueError("http", 400, "FOK_ORDER_NOT_FILLED_ERROR"), Verdict.REJECT, "FOK_ORDER_NOT_FILLED_ERROR", False,
     False, False),
    (v.VenueError("http", 400, "MARKET_CLOSED"), Verdict.REJECT, "MARKET_CLOSED", False, False, True),
    (v.VenueError("http", 409, "INVALID_ORDER_DUPLICATED"), Verdict.REJECT, "INVALID_ORDER_DUPLICATED", False, False,
     False),
    (v.VenueError("http", 404, "ORDER_NOT_FOUND"), Verdict.NOT_FOUND, "ORDER_NOT_FOUND", False, False, False),
    # only the venue's ORDER_NOT_FOUND says the order is not there: a bare 404 comes from a proxy or a wrong path
    (v.VenueError("http", 404, ""), Verdict.REJECT, "VENUE_HTTP_404", False, False, False),
    (v.VenueError("http", 401, "UNAUTHORIZED"), Verdict.REJECT, "VENUE_UNAUTHORIZED", False, False, False),
    (v.VenueError("http", 422, "weird code!"), Verdict.REJECT, "WEIRDCODE", False, False, False),
    (v.VenueError("http", 400, ""), Verdict.REJECT, "VENUE_HTTP_400", False, False, False),
])
def test_classify(result, verdict, reason, may_hold, breaker, invalidate) -> None:  # type: ignore[no-untyped-def]
    c = classify(result)
    assert (c.verdict, c.reason, c.venue_may_hold, c.breaker_failure, c.invalidate_market) == (
        verdict, reason, may_hold, breaker, invalidate)


SUB1 = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=1)
SUB4 = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=4)
RETRY_5XX = classify(v.VenueError("http", 503))
RETRY_429 = classify(v.VenueError("http", 429))


@pytest.mark.parametrize(("life", "c", "may_retry", "held_before", "expected"), [
    (SUB1, RETRY_5XX, True, False, [lc.SubmitAttemptFailed("VENUE_HTTP_503")]),
    # the venue may hold it: settle by query; answered, so a not-found re-POSTs
    (SUB4, RETRY_5XX, True, False, [lc.OrderTimedOut("VENUE_HTTP_503", answered=True)]),
    (SUB1, RETRY_5XX, False, False, [lc.OrderTimedOut("VENUE_HTTP_503", answered=True)]),
    (SUB4, RETRY_429, True, False, [lc.OrderTimedOut("VENUE_RATE_LIMITED", answered=True)]),
    (SUB1, RETRY_429, False, False, [lc.OrderTimedOut("VENUE_RATE_LIMITED", answered=True)]),
    (SUB4, RETRY_429, True, True, [lc.OrderTimedOut("VENUE_RATE_LIMITED", answered=True)]),
    (SUB4, classify(v.VenueError("connect")), True, False,
     [lc.OrderFailed("RETRIES_EXHAUSTED", "4 attempts, last error VENUE_UNREACHABLE")]),
    (SUB1, classify(v.VenueError("connect")), False, False,
     [lc.OrderFailed("BREAKER_OPEN", "last error VENUE_UNREACHABLE")]),
    (SUB4, classify(v.VenueError("disconnect")), True, False, [lc.OrderTimedOut("VENUE_DISCONNECTED")]),
    (SUB1, classify(v.VenueError("timeout")), True, False, [lc.OrderTimedOut("VENUE_TIMEOUT")]),
    (SUB1, classify(v.VenueError("http", 400, "MARKET_CLOSED")), True, False, [lc.OrderRejected("MARKET_CLOSED")]),
    (SUB1, classify(v.VenueError("connect")), True, False, [lc.SubmitAttemptFailed("VENUE_UNREACHABLE")]),
])
def test_decide_submit(life, c, may_retry, held_before, expected) -> None:  # type: ignore[no-untyped-def]
    assert decide_submit(life, c, max_attempts=4, may_retry_now=may_retry,
                         venue_may_hold_already=held_before) == expected


PLACED = lc.OrderLife("co_1", lc.State.PLACED, "io_1")
PARTIAL = lc.OrderLife("co_1", lc.State.PARTIALLY_FILLED, "io_1", filled_size=D("4"), avg_price=D("0.5"))


def _o(status: str, size: str = "0", avg: str = "0") -> v.VenueOrder:
    return v.VenueOrder("io_1", "co_1", status, D(size), D(avg))


@pytest.mark.parametrize(("life", "order", "expected"), [
    (PLACED, _o("matched", "10", "0.5"), []),
    (PLACED, _o("mined", "10", "0.5"), []),
    (PLACED, _o("delayed"), []),
    (PLACED, _o("live"), []),
    (PLACED, _o("confirmed", "10", "0.5"), [lc.OrderFilled(D("10"), D("0.5"))]),
    (PLACED, _o("confirmed"), [lc.OrderCancelled("NOT_FILLED")]),
    (PLACED, _o("cancelled"), [lc.OrderCancelled("NOT_FILLED", D("0"), D("0"))]),
    (PLACED, _o("failed", "10", "0.5"), [lc.OrderFailed("VENUE_FAILED", "venue order io_1 failed")]),
    (PLACED, _o("live", "4", "0.5"), [lc.OrderPartiallyFilled(D("4"), D("0.5"))]),
    (PARTIAL, _o("live", "4", "0.5"), []),
    (PARTIAL, _o("live", "6", "0.51"), [lc.OrderPartiallyFilled(D("6"), D("0.51"))]),
    (PARTIAL, _o("cancelled", "4", "0.5"), [lc.OrderCancelled("VENUE_CANCELLED", D("4"), D("0.5"))]),
    (PARTIAL, _o("confirmed", "10", "0.52"), [lc.OrderFilled(D("10"), D("0.52"))]),
])
def test_decide_status(life, order, expected) -> None:  # type: ignore[no-untyped-def]
    events = decide_status(life, order)
    assert events == expected
    for e in events:  # every decision is a legal move
        life = lc.apply(life, e)


def test_accepted_then_status() -> None:
    life = lc.OrderLife("co_1", lc.State.UNKNOWN)
    events = accepted(life, _o("confirmed", "10", "0.5"))
    assert events == [lc.OrderAccepted("io_1", "confirmed"), lc.OrderFilled(D("10"), D("0.5"))]
    for e in events:
        life = lc.apply(life, e)
    assert life.state is lc.State.FILLED


NF = classify(v.VenueError("http", 404, "ORDER_NOT_FOUND"))
UNK = lc.OrderLife("co_1", lc.State.UNKNOWN)


@pytest.mark.parametrize(("life", "c", "resubmit", "expected"), [
    (UNK, NF, True, [lc.OrderNotFound()]),
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=1), NF, True, [lc.OrderNotFound()]),
    # while young, not found means POST again with the same Idempotency-Key: the venue answers with the order
    # it has (one it was still processing included), or takes it now; LOST only past the resubmit window
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2), NF, True, [lc.OrderNotFound(), lc.OrderSubmitted()]),
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2), NF, False, [lc.OrderNotFound(), lc.OrderLost()]),
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, maybe_unsent=True), NF, True,
     [lc.OrderNotFound(), lc.OrderSubmitted()]),
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, maybe_unsent=True, detail="EXECUTOR_RESTARTED"), NF,
     False, [lc.OrderNotFound(), lc.OrderLost()]),
    # a 5xx was answered: not found means not taken; re-POST while young, FAILED (not LOST) after
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, maybe_unsent=True, detail="VENUE_HTTP_503"), NF, True,
     [lc.OrderNotFound(), lc.OrderSubmitted()]),
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, maybe_unsent=True, detail="VENUE_HTTP_503"), NF, False,
     [lc.OrderNotFound(), lc.OrderFailed("VENUE_UNAVAILABLE", "not taken after VENUE_HTTP_503; resubmit window over")]),
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, detail="VENUE_TIMEOUT"), NF, True,
     [lc.OrderNotFound(), lc.OrderSubmitted()]),  # a timed-out POST the venue may still be processing
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2, detail="VENUE_TIMEOUT"), NF, False,
     [lc.OrderNotFound(), lc.OrderLost()]),
    # a bare 404 (a proxy, a wrong path) is not the venue saying it has no such order: ask again
    (lc.OrderLife("co_1", lc.State.UNKNOWN, not_found=2), classify(v.VenueError("http", 404)), False, []),
    (UNK, classify(v.VenueError("http", 503)), True, []),
    (UNK, classify(v.VenueError("timeout")), True, []),
])
def test_decide_unknown(life, c: Classification, resubmit: bool, expected) -> None:  # type: ignore[no-untyped-def]
    assert decide_unknown(life, c, lost_after=3, resubmit_allowed=resubmit) == expected


@pytest.mark.parametrize(("missing", "now_ms", "lost_after", "lost_after_s", "lost"), [
    (Missing(1, 0), 0, 3, 60.0, False),
    (Missing(2, 0), 120_000, 3, 60.0, False),  # long enough, but not enough queries in a row
    (Missing(3, 0), 59_999, 3, 60.0, False),  # enough queries, not long enough
    (Missing(3, 0), 60_000, 3, 60.0, True),
    (Missing(7, 1_000), 400_000, 3, 60.0, True),
    (Missing(1, 0), 0, 1, 0.001, False),
    (Missing(1, 0), 1, 1, 0.001, True),
    (Missing(100, 0), 10**9, 3, 0.0, False),  # 0: queried for good
])
def test_decide_placed_missing(missing: Missing, now_ms: int, lost_after: int, lost_after_s: float,
                               lost: bool) -> None:
    events = decide_placed_missing(missing, now_ms, lost_after=lost_after, lost_after_s=lost_after_s)
    assert [type(e) for e in events] == ([lc.OrderLost] if lost else [])
    if lost:
        (event,) = events
        assert isinstance(event, lc.OrderLost) and event.reason == PLACED_NOT_FOUND
        assert str(missing.count) in event.detail


def test_missed_counts_in_a_row_from_the_first_miss() -> None:
    first = missed(None, 1_000)
    assert first == Missing(1, 1_000)
    assert missed(missed(first, 2_000), 3_000) == Missing(3, 1_000)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ((D("0"), D("0")), (D("10"), D("0.5")), (D("10"), D("0.5"))),
    ((D("10"), D("0.5")), (D("20"), D("0.55")), (D("10"), D("0.6"))),
    ((D("10"), D("0.5")), (D("10"), D("0.5")), (D("0"), D("0"))),
])
def test_fill_increment(old, new, expected) -> None:  # type: ignore[no-untyped-def]
    assert fill_increment(*old, *new) == expected
