"""EndOrder against what else may run an order: once an operator ended it, it is not run, queried or booked again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import pytest

from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.ticket import Ticket
from services.executor.status_tracker import Tracker
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.executor.test_operator_end import ASKS, BIDS, end, stuck, unit_bug
from tests.helpers import eventually, internal_channel
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration


def _ticket(coid: str) -> Ticket:
    return Ticket(make_order(0, client_order_id=coid), "INSIDERS", None, 0)


async def test_tracker_discard_stops_a_query_already_waiting_for_a_slot() -> None:
    """Tracker.discard promises that nothing queries the order once it returns; a query the tracker picked before
    the discard and that waits for a free slot (all max_status_queries taken, as in any fan-out) still runs."""
    gate = asyncio.Event()
    polled: list[str] = []

    async def poll(t: Ticket, life: OrderLife) -> tuple[OrderLife, bool]:
        polled.append(t.client_order_id)
        if t.client_order_id == "co_b":
            await gate.wait()
        return life, False

    tracker = Tracker(poll, initial_s=0.01, max_s=0.02, max_concurrent=1)
    tracker.add(_ticket("co_b"), OrderLife("co_b", State.PLACED))
    await eventually(lambda: polled == ["co_b"])  # B's query holds the one slot
    tracker.add(_ticket("co_a"), OrderLife("co_a", State.PLACED))
    await eventually(lambda: not tracker._due)  # A is due and picked: it waits for the slot
    await tracker.discard("co_a")  # EndOrder: "nothing here ... queries the order once this returns"
    gate.set()
    await asyncio.sleep(0.1)
    await tracker.close()
    assert "co_a" not in polled, f"queried after discard: {polled}"


@pytest.fixture
async def stub_one_query(harness: Harness) -> AsyncIterator[Any]:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor(TT_TUNE_EXECUTOR_MAX_STATUS_QUERIES="1")
    async with internal_channel(running.server.port) as channel:
        yield egrpc.ExecutorServiceStub(channel)


async def test_an_order_ended_by_hand_is_not_booked_again_by_a_status_query_that_waited_for_a_slot(
        harness: Harness, stub_one_query: Any, db_url: str) -> None:
    running = harness.executor
    assert running is not None
    tracker = running.runner.tracker
    a, b = make_order(1), make_order(2)
    real_view = harness.fake.view
    unit_bug(harness, a.client_order_id)  # A: placed, every status query of it implausible
    await harness.route(a)
    await eventually(lambda: a.client_order_id in tracker, message="A placed and polled")

    venue = running.runner.venues["INSIDERS"]
    real_query = venue.query
    held = asyncio.Event()
    b_waiting = asyncio.Event()
    a_vid = tracker._orders[a.client_order_id].life.venue_order_id

    async def query(venue_order_id: str) -> Any:  # B's status queries hang (a slow venue answer)
        if venue_order_id != a_vid:
            b_waiting.set()
            await held.wait()
        return await real_query(venue_order_id)

    venue.query = query  # type: ignore[method-assign]
    harness.fake.faults.post_delay_s = 0.0
    await harness.route(b)
    await eventually(b_waiting.is_set, message="B's query holds the one slot")
    await eventually(lambda: not tracker._due and a.client_order_id in tracker, message="A picked, waiting")
    harness.fake.view = real_view  # type: ignore[method-assign]  # the venue answers A plausibly again

    answer = await stub_one_query.EndOrder(end(a.client_order_id, "END_OUTCOME_FILLED", filled_size="19.6",
                                               avg_price="0.51"), timeout=10)
    assert answer.last_event.type == epb.ORDER_EVENT_TYPE_FILLED
    queries_at_end = harness.fake.queries
    held.set()  # B's answer comes back: the slot is free
    await eventually(lambda: harness.terminal(b.client_order_id), timeout_s=10)
    await asyncio.sleep(0.5)
    assert rows(db_url, "SELECT size FROM positions WHERE follower_wallet_id = 'w_1'") == [(D("19.6"),)]
    assert [e.type for e in await harness.events_of(a.client_order_id)] == [
        epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
    assert harness.fake.queries == queries_at_end + 1  # B's only


@pytest.fixture
async def stub(harness: Harness) -> AsyncIterator[Any]:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    async with internal_channel(running.server.port) as channel:
        yield egrpc.ExecutorServiceStub(channel)


async def test_an_order_resumed_while_it_is_ended_by_hand_is_not_run_on(
        harness: Harness, stub: Any, db_url: str) -> None:
    """Between EndOrder's take-over and its transition the order runs nowhere, so anything that resumes orders not
    running (a duplicate SubmitOrder of its id, the given-up sweep) starts a runner of it; EndOrder ends the row all
    the same and that runner goes on: it books the venue's answer on top of the operator's."""
    running = harness.executor
    assert running is not None
    o = make_order(1)
    real_view = harness.fake.view
    await stuck(harness, running, o)
    journal = running.runner.journal
    real_write = journal.write
    resumed: list[bool] = []

    async def write(changes: list[Any], inserts: Any = None, *, urgent: bool = False) -> Any:
        if not changes and not inserts and urgent and not resumed:  # EndOrder's drain, after the take-over
            reply = await stub.SubmitOrder(epb.SubmitOrderRequest(order=o), timeout=10)  # guard/control retrying
            resumed.append(reply.duplicate)
        return await real_write(changes, inserts, urgent=urgent)

    journal.write = write  # type: ignore[method-assign]
    answer = await stub.EndOrder(end(o.client_order_id, "END_OUTCOME_FILLED", filled_size="19.6",
                                     avg_price="0.51"), timeout=10)
    assert answer.last_event.type == epb.ORDER_EVENT_TYPE_FILLED and resumed == [True]
    harness.fake.view = real_view  # type: ignore[method-assign]  # the venue answers plausibly again
    await asyncio.sleep(1.0)

    assert not running.runner.running(o.client_order_id)
    assert rows(db_url, "SELECT size FROM positions WHERE follower_wallet_id = 'w_1'") == [(D("19.6"),)]
    assert [e.type for e in await harness.events_of(o.client_order_id)] == [
        epb.ORDER_EVENT_TYPE_UNKNOWN, epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
