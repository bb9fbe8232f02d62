"""A PAPER SELL refused for lack of shares whose re-size a crash left undone is re-sized by the next start, from the
venue its order was stored with (PAPER: the booked position, not the Insiders API), and only once."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from services.executor import resizing
from services.executor.reconciling import resized_id
from tests.executor.conftest import ASSET, TERMINAL_TYPES, Harness, make_order, rows
from tests.executor.flip import resized_end
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
D = Decimal
WALLET = "w_paper_recovery"
NOT_ENOUGH = "INVALID_ORDER_NOT_ENOUGH_BALANCE"
UNREAD = 10_000


def _paper(i: int, **kw: Any) -> epb.Order:
    return make_order(i, follower_wallet_id=WALLET, mode=cpb.EXECUTION_MODE_PAPER, leader_trade_id=f"lt_{i}", **kw)


def _held(db_url: str) -> list[tuple[Any, ...]]:
    return rows(db_url, "SELECT size, venue FROM positions WHERE follower_wallet_id = %s", WALLET)


async def _resized_ids(harness: Harness) -> list[str]:
    return sorted({e.client_order_id for e in await harness.all_events()
                   if e.client_order_id.startswith("co_rs_") and e.type in TERMINAL_TYPES})


class _Unreadable:
    """The paper count cannot be read (a storage error)."""

    def __init__(self) -> None:
        self.tries = 0

    async def __call__(self, *args: Any) -> Decimal:
        self.tries += 1
        raise OSError("PostgreSQL unreachable")


async def test_a_refused_paper_sell_a_crash_left_without_its_resize_is_resized_by_the_next_start(
        harness: Harness, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resizing, "RESIZE_RETRY_S", 0.2)
    unreadable = _Unreadable()
    monkeypatch.setattr(resizing, "paper_count", unreadable)
    harness.fake.faults.fail_positions = UNREAD
    await harness.set_book(ASSET, [("0.49", "500")], [("0.50", "100"), ("0.51", "1000")])
    running = await harness.start_executor()
    buy = _paper(1, amount_usd="10")
    await harness.route(buy)
    await eventually(lambda: harness.terminal(buy.client_order_id), timeout_s=15)
    assert _held(db_url) == [(D("20"), "PAPER")]
    sell = _paper(2, side=cpb.SIDE_SELL, amount_usd="", size="30", reference_price="0.49")
    await harness.route(sell)
    first = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert (first.type, first.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, NOT_ENOUGH)
    await eventually(lambda: unreadable.tries >= 2)
    await running.stop(0)
    assert await _resized_ids(harness) == []
    monkeypatch.undo()  # the count is readable again (and retries at their usual pace)
    running = await harness.start_executor()
    done = await resized_end(harness)
    assert (done.client_order_id, done.type, D(done.filled_size)) == (
        resized_id(sell.client_order_id), epb.ORDER_EVENT_TYPE_FILLED, D("20"))
    assert _held(db_url) == [(D("0"), "PAPER")]
    await running.stop(0)  # a start after the re-size finds nothing left to do
    await harness.start_executor()
    await asyncio.sleep(0.5)
    assert await _resized_ids(harness) == [done.client_order_id]
    assert rows(db_url, "SELECT DISTINCT order_id FROM fills WHERE side = 'SELL' AND left(order_id, 5) <> 'part_'"
                ) == [(done.client_order_id,)]
    assert harness.fake.post_counts() == {}
    assert harness.fake.faults.fail_positions == UNREAD  # the Insiders API was never asked
