"""A SELL that ended LOST (the venue answered not-found until the executor gave up on it) may still have sold at the
venue, although the contract's three not-founds say it was never taken. Its fill is never booked (nothing queries
a LOST order again): reconciliation, woken by the LOST, brings the position to the venue's count, and later SELLs
are sized on that."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.executor.adapters.reconcile_store import LiveWallet
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.executor.flip import ASKS, BIDS, SUB, held_size, hold_shares, posted_sizes, sell_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
WALLET = "w_lost"


async def _lost_sell_that_sold(harness: Harness, db_url: str) -> epb.Order:
    """The wallet holds 100 shares (booked and at the venue); a SELL of 50 is taken and filled by the venue, whose
    answer never comes and whose status queries find nothing until the executor ends it LOST."""
    await harness.set_book(ASSET, BIDS, ASKS)
    hold_shares(db_url, WALLET, 100)
    harness.fake.holdings.terminal_trade(WALLET, ASSET, "BUY", D(100), D("0.4"))
    harness.fake.faults.timeout_posts = 1  # taken (and matched), its answer held past the executor's timeout
    harness.fake.faults.timeout_delay_s = 3.0
    harness.fake.faults.not_found_queries = 3  # the venue's lookups miss it
    await harness.start_executor(TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0")  # too old to be sent again: LOST
    lost = make_order(1, follower_wallet_id=WALLET, subscription_id=SUB, side=cpb.SIDE_SELL, amount_usd="",
                      size="50", leader_trade_id="lt_s1")
    await harness.route(lost)
    done = await eventually(lambda: harness.terminal(lost.client_order_id), timeout_s=15)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "VENUE_NOT_FOUND")
    sold = harness.fake.order(lost.client_order_id)
    assert sold is not None and sold.filled_size == D(50)  # the venue did sell them
    return lost


async def test_reconciliation_books_what_a_lost_sell_sold_and_the_next_sell_is_sized_on_it(
        harness: Harness, db_url: str) -> None:
    lost = await _lost_sell_that_sold(harness, db_url)
    assert harness.executor is not None and harness.executor.reconciler is not None
    # a position with its life's id (as a booking gives it), booked before the settling grace
    rows(db_url, "UPDATE positions SET id = 'pos_lost', updated_at = now() - interval '1 minute' RETURNING 1")
    await harness.executor.reconciler.reconcile(LiveWallet(WALLET, "0xa"))
    assert held_size(db_url, WALLET) == D(50)  # the venue's count
    # booked as a correction at the average cost (no PnL), never as the LOST order's fill
    assert rows(db_url, "SELECT count(*) FROM fills WHERE order_id = %s", lost.client_order_id) == [(0,)]
    assert rows(db_url, "SELECT side, size, price FROM fills WHERE order_id LIKE 'reconcile_%%'") == [
        ("SELL", D(50), D("0.4"))]
    half = sell_order(2, "0.5", follower_wallet_id=WALLET)
    await harness.route(half)
    done = await eventually(lambda: harness.terminal(half.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, half.client_order_id) == [D(25)]
