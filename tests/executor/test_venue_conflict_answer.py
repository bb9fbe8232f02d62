"""A ``409 Conflict`` to a re-POST is the venue saying it knows the Idempotency-Key (the first attempt is still being
processed, or was taken): the order may be at the venue, whatever the earlier attempts were answered. Never found
afterwards it ends LOST (ORDER_LOST, its wallet reconciled), not FAILED "not taken". Seen: a gateway answered 502 to
a POST the backend took; the retry got 409; the venue's index did not show the order within the resubmit window; the
order ended FAILED ``VENUE_UNAVAILABLE`` and its fill went unnoticed. Real PostgreSQL, Redis and the Insiders fake."""

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


class ConflictFake(InsidersFake):
    """Takes the first POST of a key but answers it 502 (its gateway gave up); answers a replay 409."""

    def _post_order(self, request: Request, record: PostRecord) -> Response:
        resp = super()._post_order(request, record)
        assert isinstance(resp, Response), "no held answers in these tests"
        if record.outcome == "created":
            return json_response({"error": "BAD_GATEWAY", "message": "upstream gave up"}, 502)
        if record.outcome == "replayed":
            return json_response({"error": "IDEMPOTENCY_KEY_IN_USE", "message": "request in progress"}, 409)
        return resp


@pytest.fixture
async def conflicting(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, ConflictFake) as h:
        yield h


async def test_an_order_whose_retry_is_answered_409_and_never_found_ends_lost_not_failed(
        conflicting: Harness, db_url: str) -> None:
    h = conflicting
    h.fake.faults.not_found_queries = 1_000_000  # the venue's index never shows it
    o, done = await copy_to_its_end(h, TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0.5")
    taken = h.fake.order(o.client_order_id)
    assert taken is not None and taken.filled_size > 0  # the venue has it, filled
    assert [p.outcome for p in h.fake.posts_for(o.client_order_id)][:2] == ["created", "replayed"]
    assert h.fake.taken_counts()[o.client_order_id] >= 2  # one order, replayed: never a second
    assert len(h.fake.orders) == 1
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "VENUE_NOT_FOUND")
    assert rows(db_url, "SELECT state, post_uncertain FROM orders") == [("LOST", True)]


CONFLICT = v.VenueError("http", 409, "", "")


@pytest.mark.parametrize("conflict", [CONFLICT, v.VenueError("http", 409, "INVALID_ORDER_DUPLICATED", "")])
def test_a_first_post_answered_409_is_settled_by_query_not_rejected(conflict: v.VenueError) -> None:
    # the intent is recorded before the POST and the client never resends: the key the venue knows is this order's
    life = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=1)
    events = decide_submit(life, classify(conflict), max_attempts=4, may_retry_now=True,
                           venue_may_hold_already=False)
    assert len(events) == 1 and isinstance(events[0], lc.OrderTimedOut) and not events[0].answered


@pytest.mark.parametrize("conflict", [CONFLICT, v.VenueError("http", 409, "IDEMPOTENCY_KEY_IN_USE", "")])
def test_a_409_after_an_attempt_the_venue_may_hold_keeps_the_order_uncertain(conflict: v.VenueError) -> None:
    life = lc.OrderLife("co_1", lc.State.SUBMITTING, attempts=2)
    events = decide_submit(life, classify(conflict), max_attempts=4, may_retry_now=True,
                           venue_may_hold_already=True)
    assert len(events) == 1 and isinstance(events[0], lc.OrderTimedOut) and not events[0].answered
    after = lc.apply(life, events[0])
    assert after.post_uncertain and not after.not_taken_if_not_found
