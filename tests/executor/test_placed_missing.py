"""A placed order the venue's lookups stop finding (real PostgreSQL, Redis, gRPC and the Insiders fake)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from common import reservations
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
BIDS = [("0.49", "500"), ("0.48", "1000")]


async def _resting_partly_filled(harness: Harness, lost_after_s: str, *, reserve: bool = True) -> tuple[epb.Order, Any]:
    """A GTC BUY of 100 at 0.50 resting at the venue with 40 matched (its PARTIALLY_FILLED booked)."""
    await harness.set_book(ASSET, BIDS, [("0.50", "40")])
    o = make_order(1, order_type=epb.ORDER_TYPE_GTC, amount_usd="", size="100", limit_price="0.50")
    if reserve:
        await reservations.reserve(harness.redis, [reservations.Reservation(
            o.client_order_id, o.follower_wallet_id, reservations.USD, CONDITION, 50_000_000, "lt_1")])
    running = await harness.start_executor(TT_TUNE_EXECUTOR_PLACED_LOST_AFTER_S=lost_after_s)
    await harness.route(o)

    async def partial() -> bool:
        return any(e.type == epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED for e in await harness.events_of(o.client_order_id))
    await eventually(partial, timeout_s=10)
    return o, running


async def _released(harness: Harness) -> None:
    async def released() -> bool:
        return (await reservations.read(harness.redis, ["w_1"]))["w_1"].total_usd_micro == 0
    await eventually(released)


async def test_a_placed_order_the_venue_no_longer_finds_is_lost_with_its_fills_kept(
        harness: Harness, db_url: str) -> None:
    """A resting order the venue no longer finds, by its venue id, by its client order id nor to cancel it, ends
    LOST once it was missing long enough: the part that filled stays booked, the rest of its reservation is
    released (before, it was queried for ever and held the follower's headroom)."""
    o, _running = await _resting_partly_filled(harness, "0.3")
    queries_before = harness.fake.queries
    harness.fake.drop(o.client_order_id)
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "PLACED_ORDER_NOT_FOUND")
    assert D(done.filled_size) == D("40")
    queries = harness.fake.queries - queries_before
    assert queries >= 6 and queries % 2 == 0  # each miss asked by both ids, at least LOST_AFTER (3) of them
    assert rows(db_url, "SELECT size FROM fills") == [(D("40"),)]
    assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D("40"), D("20.00"))]
    assert harness.fake.post_counts() == {o.client_order_id: 1}
    await _released(harness)


async def test_a_placed_order_the_lookups_miss_is_cancelled_not_lost(harness: Harness, db_url: str) -> None:
    """Lookups that keep missing an order the venue still has (a venue-side glitch) do not leave it resting there,
    able to fill after its reservation is released: the cancel sent before LOST ends it CANCELLED with what
    it filled, booked once."""
    o, _running = await _resting_partly_filled(harness, "0.3")
    harness.fake.faults.not_found_queries = 1_000_000  # every lookup misses; the order still rests at the venue
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_CANCELLED, "VENUE_CANCELLED")
    assert D(done.filled_size) == D("40")
    resting = harness.fake.order(o.client_order_id)
    assert resting is not None and resting.status == "cancelled"
    assert rows(db_url, "SELECT size FROM fills") == [(D("40"),)]
    assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D("40"), D("20.00"))]
    await _released(harness)


async def test_a_placed_order_missing_now_and_then_is_not_lost(harness: Harness) -> None:
    """Not-found answers that are not LOST_AFTER in a row (an answer with the order in between starts the
    count again) lose nothing: the order fills as usual."""
    o, running = await _resting_partly_filled(harness, "0.01", reserve=False)

    async def missed_twice_then_found() -> None:
        target = harness.fake.queries + 5
        harness.fake.faults.not_found_queries = 4  # two misses (venue id, then client order id), then found
        await eventually(lambda: harness.fake.queries >= target, timeout_s=10)
        await eventually(lambda: len(running.runner.placed) == 0)
    for _ in range(3):
        await missed_twice_then_found()
    assert await harness.terminal(o.client_order_id) is None
    harness.fake.fill_resting(o.client_order_id, D("60"), D("0.50"))
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED and D(done.filled_size) == D("100")
