"""A ``502 Bad Gateway`` or ``504 Gateway Timeout`` to a POST comes from a proxy in front of the venue's backend, which
may have taken the order (a 504 is a timeout the proxy saw): the order is uncertain for good (``post_uncertain``), as
after a timeout of our own. Never found afterwards it ends LOST (ORDER_LOST, its wallet reconciled), not FAILED
``VENUE_UNAVAILABLE`` ("not taken"), whatever the later attempts are answered. Seen: POST -> 504 while the backend
filled the order; the retries got 5xx and the lookups by client order id 404 (the backend's index lagged); the order
ended FAILED, no alert, no reconciliation, and the follower held shares nobody booked. A ``500``, ``503``, ``425`` or
``429`` is the venue's own refusal: not found later, it was not taken (unchanged). Real PostgreSQL, Redis and the
Insiders fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import classify, decide_submit
from sim.httpserve import Request, Response, json_response
from sim.insiders import InsidersFake, PostRecord
from tests.executor.conftest import Harness, copy_to_its_end, rows, running_harness
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


class GatewayFake(InsidersFake):
    """Takes the first POST of a key but answers it ``first_status`` (the gateway lost the backend's answer); answers
    every replay ``later_status`` (the gateway keeps failing); whatever it answers, it never takes a second order."""

    first_status = 504
    later_status = 503

    def _post_order(self, request: Request, record: PostRecord) -> Response:
        resp = super()._post_order(request, record)
        assert isinstance(resp, Response), "no held answers in these tests"
        if record.outcome == "created":
            return json_response({"error": "GATEWAY", "message": "upstream"}, self.first_status)
        if record.outcome == "replayed":
            return json_response({"error": "GATEWAY", "message": "upstream"}, self.later_status)
        return resp


@pytest.fixture
async def gateway(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, GatewayFake) as h:
        yield h


@pytest.mark.parametrize(("first", "later"), [(504, 503), (502, 503), (504, 504)])
async def test_an_order_taken_behind_a_gateway_error_and_never_found_ends_lost_not_failed(
        gateway: Harness, db_url: str, first: int, later: int) -> None:
    h = gateway
    assert isinstance(h.fake, GatewayFake)
    h.fake.first_status, h.fake.later_status = first, later
    h.fake.faults.not_found_queries = 1_000_000  # the backend's index never shows it
    o, done = await copy_to_its_end(h, TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0.5")
    taken = h.fake.order(o.client_order_id)
    assert taken is not None and taken.filled_size > 0  # the venue has it, filled
    assert len(h.fake.orders) == 1  # replayed, never a second order
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "VENUE_NOT_FOUND"), done.reason
    assert rows(db_url, "SELECT state, post_uncertain FROM orders") == [("LOST", True)]


async def test_an_order_refused_503_by_the_venue_itself_and_never_found_is_still_not_taken(
        gateway: Harness, db_url: str) -> None:
    # the counterpart: every POST answered 503 and nothing taken; not found, it was not taken (FAILED, no alert)
    h = gateway
    h.fake.faults.fail_posts = 1_000_000  # 503 SERVICE_UNAVAILABLE, nothing recorded
    o, done = await copy_to_its_end(h, 2, TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0.5")
    assert h.fake.order(o.client_order_id) is None
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_FAILED, "VENUE_UNAVAILABLE"), done.reason
    assert rows(db_url, "SELECT state, post_uncertain FROM orders") == [("FAILED", False)]


GATEWAY_ANSWERS = [v.VenueError("http", 502, "BAD_GATEWAY"), v.VenueError("http", 504, ""),
                   v.VenueError("http", 524, ""), v.VenueError("http", 599, ""),
                   v.VenueError("http", 500, "UPSTREAM_TIMEOUT"), v.VenueError("http", 503, "gateway_timed_out")]
VENUE_REFUSALS = [v.VenueError("http", 500, "INTERNAL"), v.VenueError("http", 503, "SERVICE_UNAVAILABLE"),
                  v.VenueError("http", 425, ""), v.VenueError("http", 429, ""), v.VenueError("http", 521, "")]


@pytest.mark.parametrize("answer", GATEWAY_ANSWERS, ids=lambda a: f"{a.http_status}-{a.code}")
def test_a_gateway_error_leaves_the_order_uncertain_for_good(answer: v.VenueError) -> None:
    c = classify(answer)
    assert c.uncertain and c.venue_may_hold and not c.answered and c.breaker_failure
    life = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=1)
    [retry] = decide_submit(life, c, max_attempts=4, may_retry_now=True, venue_may_hold_already=False)
    assert retry == lc.SubmitAttemptFailed(c.reason, uncertain=True)
    assert lc.apply(life, retry).post_uncertain
    last = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=4)
    [timed_out] = decide_submit(last, c, max_attempts=4, may_retry_now=True, venue_may_hold_already=False)
    after = lc.apply(last, timed_out)
    assert after.state is lc.State.UNKNOWN and after.post_uncertain and not after.not_taken_if_not_found


@pytest.mark.parametrize("answer", VENUE_REFUSALS, ids=lambda a: f"{a.http_status}-{a.code}")
def test_the_venues_own_retryable_refusal_stays_answered(answer: v.VenueError) -> None:
    c = classify(answer)
    assert c.answered and not c.uncertain
    last = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=4)
    [timed_out] = decide_submit(last, c, max_attempts=4, may_retry_now=True, venue_may_hold_already=False)
    assert lc.apply(last, timed_out).not_taken_if_not_found
