"""An order the venue keeps answering implausibly for (a unit bug) waits UNKNOWN, holding its reservation and an open-
order slot; an operator ends it by hand (EndOrder) with what they read at the venue: not filled (reservation and slot
released, the next copy flows) or filled (booked as a venue answer of that fill would be). Refusals: an unknown id, an
order already final, a process that may no longer hold the lease, and input that does not read."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import grpc
import pytest

from common import reservations
from common.lease import FENCE_SQLSTATE
from services.executor.app import Running
from sim.venue import FakeOrder
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order, rows
from tests.helpers import eventually, internal_channel
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.execution.v1 import execution_pb2_grpc as egrpc

pytestmark = pytest.mark.integration
BIDS = [("0.49", "1000")]
ASKS = [("0.50", "1000"), ("0.51", "1000")]
# one open order at a time, and a routed trade waits (up to a minute) for it to end
ONE_SLOT = {"TT_TUNE_EXECUTOR_MAX_OPEN_ORDERS": "1", "TT_TUNE_EXECUTOR_ADMISSION_WAIT_MAX_S": "60"}
WHY = "venue support: order rejected on their side, ticket 4411"


def unit_bug(h: Harness, coid: str) -> None:
    """The fake reports ``coid``'s fill in base units (10^6 a share) from now on, as a venue with a unit bug would."""
    real = h.fake.view

    def view(o: FakeOrder) -> FakeOrder:
        seen = real(o)
        if seen.client_order_id != coid:
            return seen
        return dataclasses.replace(seen, filled_size=seen.filled_size * 1_000_000, cost=seen.cost * 1_000_000)

    h.fake.view = view  # type: ignore[method-assign]


async def stuck(h: Harness, running: Running, o: epb.Order) -> None:
    """Route ``o`` so that its POST times out and every status query of it is answered implausibly: it waits UNKNOWN."""
    h.fake.faults.timeout_posts, h.fake.faults.timeout_delay_s = 1, 2.0
    unit_bug(h, o.client_order_id)
    await reservations.reserve(h.redis, [reservations.Reservation(
        o.client_order_id, o.follower_wallet_id, reservations.USD, CONDITION, 10_000_000, "lt_1")])
    await h.route(o)
    queried = h.fake.queries
    await eventually(lambda: h.fake.queries > queried + 3, message="asked again and again")
    assert [e.type for e in await h.events_of(o.client_order_id)] == [epb.ORDER_EVENT_TYPE_UNKNOWN]
    assert running.runner.running(o.client_order_id)


async def held_usd(h: Harness, wallet: str) -> int:
    return (await reservations.read(h.redis, [wallet]))[wallet].total_usd_micro


async def released(h: Harness, wallet: str) -> bool:
    return await held_usd(h, wallet) == 0


def end(coid: str, outcome: Any = "END_OUTCOME_NOT_FILLED", reason: str = WHY, **kw: str) -> Any:
    return epb.EndOrderRequest(client_order_id=coid, outcome=outcome, reason=reason, **kw)


@pytest.fixture
async def stub(harness: Harness) -> AsyncIterator[Any]:
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor(**ONE_SLOT)
    async with internal_channel(running.server.port) as channel:
        yield egrpc.ExecutorServiceStub(channel)


async def test_an_order_stuck_on_implausible_answers_ended_as_not_filled_frees_its_slot_and_reservation(
        harness: Harness, stub: Any, db_url: str) -> None:
    running = harness.executor
    assert running is not None
    o, later = make_order(1), make_order(2)
    await stuck(harness, running, o)
    assert await held_usd(harness, "w_1") == 10_000_000
    await harness.route(later)  # the one slot is held: the next copy waits
    await eventually(lambda: running.admission.room_waits == 1)
    assert harness.fake.post_counts() == {o.client_order_id: 1}

    answer = await stub.EndOrder(end(o.client_order_id), timeout=10)

    last = answer.last_event
    assert (last.type, last.reason, last.detail, D(last.filled_size)) == (
        epb.ORDER_EVENT_TYPE_CANCELLED, "OPERATOR_RESOLVED", WHY, 0)
    assert await harness.terminal(o.client_order_id) == last  # streamed like any other event
    assert not running.runner.running(o.client_order_id)  # no longer asked about
    assert rows(db_url, "SELECT state, reason, detail FROM orders WHERE client_order_id = %s", o.client_order_id) == [
        ("CANCELLED", "OPERATOR_RESOLVED", WHY)]
    await eventually(lambda: released(harness, "w_1"), timeout_s=5)
    await eventually(lambda: harness.terminal(later.client_order_id), timeout_s=10)
    assert (await harness.terminal(later.client_order_id)).type == epb.ORDER_EVENT_TYPE_FILLED
    assert rows(db_url, "SELECT count(*) FROM fills WHERE order_id = %s", o.client_order_id) == [(0,)]


async def test_an_order_stuck_on_implausible_answers_ended_as_filled_books_the_fill(
        harness: Harness, stub: Any, db_url: str) -> None:
    running = harness.executor
    assert running is not None
    o = make_order(1)
    await stuck(harness, running, o)

    answer = await stub.EndOrder(end(o.client_order_id, "END_OUTCOME_FILLED", filled_size="19.6",
                                     avg_price="0.51"), timeout=10)

    last = answer.last_event
    assert (last.type, last.reason, last.detail) == (epb.ORDER_EVENT_TYPE_FILLED, "OPERATOR_RESOLVED", WHY)
    assert (D(last.filled_size), D(last.avg_price), D(last.fill_size), D(last.fill_notional_usd)) == (
        D("19.6"), D("0.51"), D("19.6"), D("9.996"))
    assert [e.type for e in await harness.events_of(o.client_order_id)] == [
        epb.ORDER_EVENT_TYPE_UNKNOWN, epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
    assert rows(db_url, "SELECT size, price, notional_usd FROM fills WHERE order_id = %s",
                o.client_order_id) == [(D("19.6"), D("0.51"), D("9.996"))]
    assert rows(db_url, "SELECT size, cost_usd FROM positions WHERE follower_wallet_id = 'w_1'") == [
        (D("19.6"), D("9.996"))]
    assert not running.runner.running(o.client_order_id)
    await eventually(lambda: released(harness, "w_1"), timeout_s=5)


async def test_a_placed_order_answered_implausibly_ended_by_hand_is_no_longer_queried(
        harness: Harness, stub: Any, db_url: str) -> None:
    running = harness.executor
    assert running is not None
    o = make_order(6)
    unit_bug(harness, o.client_order_id)  # the POST's answer reads; every status query's does not
    await harness.route(o)
    await eventually(lambda: o.client_order_id in running.runner.tracker, message="placed and polled")
    queried = harness.fake.queries
    await eventually(lambda: harness.fake.queries > queried + 3, message="asked again and again")

    answer = await stub.EndOrder(end(o.client_order_id, "END_OUTCOME_FILLED", filled_size="19.6",
                                     avg_price="0.51"), timeout=10)

    assert (answer.last_event.type, answer.last_event.reason) == (epb.ORDER_EVENT_TYPE_FILLED, "OPERATOR_RESOLVED")
    assert not running.runner.running(o.client_order_id)
    assert [e.type for e in await harness.events_of(o.client_order_id)] == [
        epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]
    assert rows(db_url, "SELECT size, price FROM fills WHERE order_id = %s", o.client_order_id) == [
        (D("19.6"), D("0.51"))]


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_an_unknown_order_is_not_found(stub: Any) -> None:
    code, _ = await _code(stub.EndOrder(end("co_nobody"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_an_order_already_final_is_refused_and_left_as_it_is(harness: Harness, stub: Any, db_url: str) -> None:
    o = make_order(3)
    await harness.route(o)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    code, message = await _code(stub.EndOrder(end(o.client_order_id), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "FILLED" in message
    assert await harness.terminal(o.client_order_id) == done
    assert rows(db_url, "SELECT reason FROM orders WHERE client_order_id = %s", o.client_order_id) == [("",)]


@pytest.mark.parametrize(("request_kw", "field"), [
    ({"outcome": "END_OUTCOME_UNSPECIFIED"}, "outcome"),
    ({"reason": "  "}, "reason"),
    ({"outcome": "END_OUTCOME_FILLED", "filled_size": "1e30", "avg_price": "0.5"}, "filled_size"),
])
async def test_bad_input_is_refused_naming_the_field_and_the_order_waits_on(
        harness: Harness, stub: Any, request_kw: dict[str, Any], field: str) -> None:
    running = harness.executor
    assert running is not None
    o = make_order(4)
    await stuck(harness, running, o)
    code, message = await _code(stub.EndOrder(end(o.client_order_id, **request_kw), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(field)
    assert running.runner.running(o.client_order_id)
    assert [e.type for e in await harness.events_of(o.client_order_id)] == [epb.ORDER_EVENT_TYPE_UNKNOWN]


class Fenced(Exception):
    sqlstate = FENCE_SQLSTATE


async def test_a_process_that_may_have_lost_its_lease_refuses(harness: Harness, stub: Any) -> None:
    running = harness.executor
    assert running is not None
    o = make_order(5)
    await stuck(harness, running, o)
    running.lease.notice_refusal(Fenced())  # a write of its epoch was refused: another executor took over
    code, message = await _code(stub.EndOrder(end(o.client_order_id), timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE and "lease" in message
    assert [e.type for e in await harness.events_of(o.client_order_id)] == [epb.ORDER_EVENT_TYPE_UNKNOWN]
