"""The reviewer's case end to end: the follower bought 100 shares by hand (MANUAL); a copy BUY of SUB is taken and
filled by the venue, whose answer never comes and whose status queries find nothing until the executor ends it LOST.
Reconciliation books the count's raise to SUB's part, and the leader's close (a fraction SELL of all) sells those
shares, not NOTHING_HELD; the hand-bought 100 stay the follower's."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from services.executor.adapters.reconcile_store import LiveWallet
from services.executor.domain import subscription_shares as ss
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order, rows
from tests.executor.flip import ASKS, BIDS, SUB, posted_sizes, sell_order
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
W = "w_lostbuy"
WALLET = LiveWallet(W, "0x" + "2" * 40)


async def _ended(harness: Harness, coid: str) -> epb.OrderEvent:
    async def check() -> epb.OrderEvent | None:
        return await harness.terminal(coid)

    done: epb.OrderEvent | None = await eventually(check, timeout_s=15)
    assert done is not None
    return done


async def test_the_leaders_close_sells_what_its_lost_copy_bought_on_a_manual_position(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes")])
    rows(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price, cost_usd,"
                 " id, state, origin, venue, updated_at, opened_at) VALUES (%s, %s, %s, %s, 100, 0.4, 40, 'pos_m',"
                 " 'OPEN', 'MANUAL', 'INSIDERS', now() - interval '2 minutes', now() - interval '2 minutes')"
                 " RETURNING 1", W, ASSET, CONDITION, WALLET.wallet)
    harness.fake.holdings.terminal_trade(W, ASSET, "BUY", D(100), D("0.4"))
    harness.fake.faults.timeout_posts = 1  # taken (and matched), its answer held past the executor's timeout
    harness.fake.faults.timeout_delay_s = 3.0
    harness.fake.faults.not_found_queries = 3  # the venue's lookups miss it
    await harness.start_executor(TT_TUNE_EXECUTOR_RESUBMIT_MAX_AGE_S="0")  # too old to be sent again: LOST
    buy = make_order(1, follower_wallet_id=W, subscription_id=SUB, amount_usd="10", follower_proxy=WALLET.wallet,
                     leader_trade_id="lt_b1")
    await harness.route(buy)
    done = await _ended(harness, buy.client_order_id)
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_LOST, "VENUE_NOT_FOUND")
    bought = harness.fake.order(buy.client_order_id)
    assert bought is not None and bought.filled_size > 0  # the venue did buy them
    count = D(harness.fake.holdings.wallet_positions(W)[0]["size"])
    assert count > D(100)

    assert harness.executor is not None and harness.executor.reconciler is not None
    await harness.executor.reconciler.reconcile(WALLET)
    [(size, cost, kept)] = rows(db_url, "SELECT size, cost_usd, subscription_shares FROM positions")
    assert size == count
    assert {k: p.shares for k, p in ss.split_of(ss.decode(kept), size, cost, None).items()} == {
        "": D(100), SUB: count - 100}

    close = sell_order(2, "1", follower_wallet_id=W, follower_proxy=WALLET.wallet)  # the leader sold all
    await harness.route(close)
    sold = await _ended(harness, close.client_order_id)
    assert sold.type == epb.ORDER_EVENT_TYPE_FILLED, (sold.reason, sold.detail)
    assert posted_sizes(harness, close.client_order_id) == [count - 100]
