"""The executor in PAPER mode answers a SELL beyond the wallet's paper holding as the live venue does: the whole
order is refused ``INVALID_ORDER_NOT_ENOUGH_BALANCE`` (400), nothing of it sold or booked (what follows, a re-sized
SELL, is tests/executor/test_paper_resize.py's)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]
WALLET = "w_paper_sell"
NOT_ENOUGH = "INVALID_ORDER_NOT_ENOUGH_BALANCE"


def _paper(i: int, **kw: Any) -> epb.Order:
    return make_order(i, follower_wallet_id=WALLET, mode=cpb.EXECUTION_MODE_PAPER, leader_trade_id=f"lt_{i}", **kw)


def _sell(i: int, size: str) -> epb.Order:
    return _paper(i, side=cpb.SIDE_SELL, amount_usd="", size=size, reference_price="0.49")


def _held(db_url: str) -> list[tuple[Any, ...]]:
    return rows(db_url, "SELECT size, venue FROM positions WHERE follower_wallet_id = %s", WALLET)


async def _holding_20_paper_shares(harness: Harness, db_url: str) -> None:
    """The executor in paper mode, and WALLET holding 20 paper shares ($10 at 0.50), booked."""
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor(live=False)
    buy = _paper(1, amount_usd="10")
    await harness.route(buy)
    bought = await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=15)
    assert (bought.type, D(bought.filled_size)) == (epb.ORDER_EVENT_TYPE_FILLED, D("20")), bought
    assert _held(db_url) == [(D("20"), "PAPER")]


async def test_a_paper_sell_of_30_against_20_held_is_refused_whole_as_the_live_venue_refuses_it(
        harness: Harness, db_url: str) -> None:
    await _holding_20_paper_shares(harness, db_url)
    sell = _sell(2, "30")
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert (done.type, done.reason, D(done.filled_size or "0")) == (epb.ORDER_EVENT_TYPE_REJECTED, NOT_ENOUGH, 0), \
        (done.type, done.reason, done.filled_size)
    assert rows(db_url, "SELECT count(*) FROM fills WHERE order_id = %s", sell.client_order_id) == [(0,)]


async def test_a_paper_sell_of_20_against_20_held_fills(harness: Harness, db_url: str) -> None:
    await _holding_20_paper_shares(harness, db_url)
    sell = _sell(2, "20")
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert (done.type, D(done.filled_size)) == (epb.ORDER_EVENT_TYPE_FILLED, D("20")), (done.reason, done.detail)
    assert _held(db_url) == [(D("0"), "PAPER")]


async def test_two_concurrent_paper_sells_do_not_both_sell_the_same_shares(harness: Harness, db_url: str) -> None:
    """Two SELLs of 15 against 20 held, sent together: whichever the paper venue answers second finds 5 left (the
    first's 15 held back while in flight, or booked) and is refused; the position is never oversold."""
    await _holding_20_paper_shares(harness, db_url)
    a, b = _sell(2, "15"), _sell(3, "15")
    await harness.route(a, b)
    done = await asyncio.gather(*(eventually(lambda o=o: harness.terminal(o.client_order_id), timeout_s=15)
                                  for o in (a, b)))
    outcomes = sorted((e.type, e.reason, D(e.filled_size or "0")) for e in done)
    assert outcomes == [(epb.ORDER_EVENT_TYPE_FILLED, "", D("15")), (epb.ORDER_EVENT_TYPE_REJECTED, NOT_ENOUGH, 0)], \
        outcomes
    await eventually(lambda: _held(db_url) == [(D("0"), "PAPER")], timeout_s=20,  # the refused one re-sized to 5
                     message="the position sold to 0, never below")
