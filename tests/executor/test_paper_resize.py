"""The executor in PAPER mode re-sizes a SELL the paper venue refused for lack of shares as LIVE re-sizes one the
live venue refused: sent once more for what the wallet holds (its booked PAPER position: the paper venue's count),
with no call to the Insiders API; a crash between the refusal and the re-size is caught up by the next start."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from services.executor.app import Running
from services.executor.reconciling import resized_id
from tests.executor.conftest import ASSET, TERMINAL_TYPES, Harness, make_order, rows
from tests.executor.flip import resized_end
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]
WALLET = "w_paper_resize"
NOT_ENOUGH = "INVALID_ORDER_NOT_ENOUGH_BALANCE"
UNREAD = 10_000  # the Insiders fake fails this many positions calls: any call for the paper wallet would use one


def _paper(i: int, **kw: Any) -> epb.Order:
    return make_order(i, follower_wallet_id=WALLET, mode=cpb.EXECUTION_MODE_PAPER, leader_trade_id=f"lt_{i}", **kw)


def _held(db_url: str) -> list[tuple[Any, ...]]:
    return rows(db_url, "SELECT size, venue FROM positions WHERE follower_wallet_id = %s", WALLET)


async def _holding_20(harness: Harness, db_url: str, *, live: bool) -> Running:
    """The executor (a LIVE venue configured or not), and WALLET holding 20 paper shares ($10 at 0.50), booked."""
    harness.fake.faults.fail_positions = UNREAD
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor(live=live)
    buy = _paper(1, amount_usd="10")
    await harness.route(buy)
    bought = await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=15)
    assert (bought.type, D(bought.filled_size)) == (epb.ORDER_EVENT_TYPE_FILLED, D("20")), bought
    assert _held(db_url) == [(D("20"), "PAPER")]
    return running


async def _refused_sell_of_30(harness: Harness) -> epb.Order:
    sell = _paper(2, side=cpb.SIDE_SELL, amount_usd="", size="30", reference_price="0.49")
    await harness.route(sell)
    first = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert (first.type, first.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, NOT_ENOUGH), (first.type, first.reason)
    return sell


async def _resized_ids(harness: Harness) -> list[str]:
    return sorted({e.client_order_id for e in await harness.all_events()
                   if e.client_order_id.startswith("co_rs_") and e.type in TERMINAL_TYPES})


@pytest.mark.parametrize("live", [False, True], ids=["paper only", "live venue configured"])
async def test_a_paper_sell_refused_for_lack_of_shares_is_resized_once_to_the_wallets_paper_position(
        harness: Harness, db_url: str, live: bool) -> None:
    """LIVE: a SELL of 100 refused against 40 held is sent again for the 40 (test_reconcile). PAPER: the SELL of 30
    against 20 held ends with the 20 sold by the re-sized SELL (before: refused, nothing followed, 20 kept)."""
    await _holding_20(harness, db_url, live=live)
    sell = await _refused_sell_of_30(harness)
    done = await resized_end(harness)
    assert (done.client_order_id, done.side, done.type, D(done.filled_size)) == (
        resized_id(sell.client_order_id), cpb.SIDE_SELL, epb.ORDER_EVENT_TYPE_FILLED, D("20"))
    assert _held(db_url) == [(D("0"), "PAPER")]
    assert rows(db_url, "SELECT order_id, sum(size), array_agg(DISTINCT venue) FROM fills WHERE side = 'SELL'"
                        " AND left(order_id, 5) <> 'part_' GROUP BY 1") == [(done.client_order_id, D("20"), ["PAPER"])]
    await asyncio.sleep(0.5)  # once: nothing more follows
    assert await _resized_ids(harness) == [done.client_order_id]
    assert harness.fake.post_counts() == {}
    assert harness.fake.faults.fail_positions == UNREAD  # the Insiders API was never asked


async def test_a_paper_sell_refused_behind_another_under_way_is_resized_to_what_that_one_left(
        harness: Harness, db_url: str) -> None:
    """Two SELLs of 15 against 20 held, sent together: the one the paper venue answers second is refused (5 left),
    then sent again for the 5 once the other's 15 are booked: the wallet sold its 20, as LIVE would."""
    await _holding_20(harness, db_url, live=False)
    a = _paper(2, side=cpb.SIDE_SELL, amount_usd="", size="15", reference_price="0.49")
    b = _paper(3, side=cpb.SIDE_SELL, amount_usd="", size="15", reference_price="0.49")
    await harness.route(a, b)
    done = await resized_end(harness)
    assert (done.type, D(done.filled_size)) == (epb.ORDER_EVENT_TYPE_FILLED, D("5")), (done.reason, done.detail)
    assert done.client_order_id in {resized_id(a.client_order_id), resized_id(b.client_order_id)}
    assert _held(db_url) == [(D("0"), "PAPER")]
