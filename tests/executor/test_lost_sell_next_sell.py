"""A SELL that ended LOST may have sold at the venue (its three not-founds release it, as the contract says). A
fraction SELL of the same position that comes before the venue's count has been read must not be sized on the
shares the LOST SELL may have sold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.executor.flip import ASKS, BIDS, SUB, held_size, hold_shares, posted_sizes, sell_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
WALLET = "w_lost_next"
PROXY = "0x" + "ab" * 20


def _live_subscription(db_url: str) -> None:
    """The wallet copies :data:`SUB` LIVE: reconciliation follows it (the LOST wakes a round of it)."""
    rows(db_url, "INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy, leader_proxy,"
                 " state, mode, sizing, filters, risk, exits, perf, create_time, update_time) VALUES (%s, 'u_1', %s,"
                 " %s, %s, 'ACTIVE', 'LIVE', '{}', '{}', '{}', '{}', '{}', now(), now()) RETURNING 1",
         SUB, WALLET, PROXY, "0x" + "f5" * 20)


async def _lost_sell_that_sold(harness: Harness, db_url: str) -> None:
    """The wallet holds 100 shares (booked long enough ago, and at the venue); a SELL of 50 is taken and filled by
    the venue, whose answer never comes and whose status queries find nothing until the executor ends it LOST."""
    await harness.set_book(ASSET, BIDS, ASKS)
    hold_shares(db_url, WALLET, 100)
    rows(db_url, "UPDATE positions SET id = 'pos_lost_next', updated_at = now() - interval '1 minute' RETURNING 1")
    _live_subscription(db_url)
    harness.fake.holdings.terminal_trade(WALLET, ASSET, "BUY", D(100), D("0.4"))
    harness.fake.faults.timeout_posts = 1  # taken (and matched), its answer held past the executor's timeout
    harness.fake.faults.timeout_delay_s = 3.0
    harness.fake.faults.not_found_queries = 3  # the venue's lookups miss it
    await harness.start_executor(TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0")  # too old to be sent again: LOST
    lost = make_order(1, follower_wallet_id=WALLET, follower_proxy=PROXY, subscription_id=SUB, side=cpb.SIDE_SELL,
                      amount_usd="", size="50", leader_trade_id="lt_s1")
    await harness.route(lost)
    done = await eventually(lambda: harness.terminal(lost.client_order_id), timeout_s=15)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "VENUE_NOT_FOUND")
    sold = harness.fake.order(lost.client_order_id)
    assert sold is not None and sold.filled_size == D(50)  # the venue did sell them


async def _sell_half(harness: Harness) -> None:
    """The leader sells another half; its copy comes before the wake reconciliation of the wallet (about 10 s after
    the LOST): half of the 50 shares the wallet holds is sold, not half of the 100 booked."""
    half = sell_order(2, "0.5", follower_wallet_id=WALLET, follower_proxy=PROXY)
    await harness.route(half)
    done = await eventually(lambda: harness.terminal(half.client_order_id), timeout_s=30)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, half.client_order_id) == [D(25)]  # 50 would sell every share it has left


async def test_a_fraction_sell_right_after_a_lost_sell_is_not_sized_on_the_shares_it_may_have_sold(
        harness: Harness, db_url: str) -> None:
    await _lost_sell_that_sold(harness, db_url)
    assert held_size(db_url, WALLET) == D(100)  # booked: the LOST SELL's fill is not known here
    await _sell_half(harness)


async def test_a_lost_sells_sale_booked_by_a_reconciliation_soon_after_it_is_not_counted_again(
        harness: Harness, db_url: str) -> None:
    await _lost_sell_that_sold(harness, db_url)
    assert harness.executor is not None
    await harness.executor.stop(0)
    await harness.start_executor()  # its first round reconciles the wallet within seconds of the LOST
    await eventually(lambda: held_size(db_url, WALLET) == D(50), timeout_s=10)
    await _sell_half(harness)
