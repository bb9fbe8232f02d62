"""A POST the venue answers with a success status other than 200 (``201 Created``, ``202 Accepted`` for a delayed
order) took the order: the executor settles it by status query and books what it fills; it never records the order
REJECTED (the shares would be bought and never booked: no position, no exit copy). Real PostgreSQL, Redis and the
Insiders fake over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import Verdict, classify
from sim.httpserve import Request, Response
from sim.insiders import InsidersFake, PostRecord
from tests.executor.conftest import Harness, copy_to_its_end, rows, running_harness
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal


class SuccessCodeFake(InsidersFake):
    """The fake, answering every POST that took an order with ``post_status`` instead of 200."""

    post_status = 201

    def _post_order(self, request: Request, record: PostRecord) -> Response:
        resp = super()._post_order(request, record)
        assert isinstance(resp, Response), "no held answers in these tests"
        if resp.status == 200:
            return Response(self.post_status, resp.body, resp.content_type)
        return resp


@pytest.fixture
async def success_harness(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, SuccessCodeFake) as h:
        yield h


@pytest.mark.parametrize("status", [201, 202])
async def test_an_order_taken_with_a_success_status_other_than_200_is_booked(
        success_harness: Harness, db_url: str, status: int) -> None:
    h = success_harness
    assert isinstance(h.fake, SuccessCodeFake)
    h.fake.post_status = status
    o, done = await copy_to_its_end(h)
    taken = h.fake.order(o.client_order_id)
    assert taken is not None and taken.filled_size > 0  # the venue bought the shares
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_FILLED, "")
    assert D(done.filled_size) == taken.filled_size
    assert rows(db_url, "SELECT size FROM fills") == [(taken.filled_size,)]
    assert h.fake.taken_counts() == {o.client_order_id: 1}


@pytest.mark.parametrize("status", [201, 202, 204, 299])
def test_a_success_status_without_a_readable_order_is_settled_by_query(status: int) -> None:
    c = classify(v.VenueError("http", status, "", ""))
    assert c.verdict is Verdict.SETTLE and c.venue_may_hold and not c.answered
