"""What a routed copy reserved comes back exactly once its order ends, however it ends: refused at intake (a number
that is not one, stale, no book to fill against), or partly filled (the fill is a position, the rest freed). Amounts
the router rounded up to micro-units come back to exactly 0."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from common import reservations
from services.router.outbound import reservation_lines
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
CLAIM = reservations.LUA_FUNCTIONS + "return tt_claim_line(ARGV[1])"
NO_BOOK_ASSET = "1" * 70


async def _claim(harness: Harness, *orders: epb.Order) -> None:
    for o in orders:  # as the router's emit script claims each trade's copies
        assert await harness.redis.eval(CLAIM, 0, reservation_lines(epb.RoutedTrade(orders=[o]))) == 1


async def _reserved(harness: Harness, wallet: str) -> int:
    got = (await reservations.read(harness.redis, [wallet]))[wallet]
    return got.total_usd_micro + got.asset_shares_micro


async def test_copies_refused_at_intake_give_back_exactly_what_they_reserved(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, [("0.49", "500")], [("0.50", "100"), ("0.51", "1000")])
    await harness.start_executor()
    old = time.time_ns() - 3_600 * 10**9
    refused = {
        "INVALID_ORDER": make_order(1, amount_usd="10.0000001", sizing_note="x"),
        "STALE_ORDER": make_order(2, amount_usd="7.1234565", routed_time_ns=old, received_time_ns=old),
        "NO_BOOK": make_order(3, asset_id=NO_BOOK_ASSET, mode=cpb.EXECUTION_MODE_PAPER, amount_usd="3.3333333"),
    }
    await _claim(harness, *refused.values())
    for o in refused.values():
        assert await _reserved(harness, o.follower_wallet_id) > 0
    refused["INVALID_ORDER"].tick_size = "tick"  # claimed as routed, then unreadable at intake
    await harness.route(*refused.values())
    for reason, o in refused.items():
        end = await eventually(lambda o=o: harness.terminal(o.client_order_id), timeout_s=15)  # type: ignore[misc]
        assert (end.type, end.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, reason), end

        async def back(o: epb.Order = o) -> bool:
            return await _reserved(harness, o.follower_wallet_id) == 0

        await eventually(back, timeout_s=10)
    assert harness.fake.posts == []


async def test_a_partly_filled_copy_frees_the_rest_and_holds_the_fill_as_a_position(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, [("0.49", "500")], [("0.50", "100"), ("0.51", "1000")])
    harness.fake.faults.partial_ratio = Decimal("0.5")  # the venue matches half of it
    await harness.start_executor()
    o = make_order(4, amount_usd="20")
    await _claim(harness, o)
    assert await _reserved(harness, o.follower_wallet_id) == 20_000_000
    await harness.route(o)
    end = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=15)  # type: ignore[misc]
    assert Decimal(end.filled_size) > 0

    async def back() -> bool:
        return await _reserved(harness, o.follower_wallet_id) == 0

    await eventually(back, timeout_s=10)
    [(size, cost)] = rows(db_url, "SELECT size, cost_usd FROM positions WHERE follower_wallet_id = %s",
                          o.follower_wallet_id)
    assert size == Decimal(end.filled_size) and cost > 0
