"""A stored book the venue has not confirmed lately is never read as "no liquidity" (the executor in-process, real
PostgreSQL and Redis, the Insiders fake).

The book below is what a restart leaves in Redis: the market's book had emptied out before the stop, and the feed
session that stored it is over. The market has a book again at the venue."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from common.marketstate import BOOK_FEED_KEY, BookSnapshot, FeedBeat, write_book
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


async def empty_book_of(harness: Harness, session: str) -> None:
    """An empty snapshot of ``session`` in Redis while the live feed session is ``live.1``; the fake has asks."""
    harness.books.set(ASSET, bids=[("0.49", "1000")], asks=[("0.50", "1000")])
    now = time.time_ns() // 1_000_000
    await write_book(harness.redis, BookSnapshot(ASSET, CONDITION, (), (), Decimal("0.01"), now, now, None, True,
                                                 session))
    await harness.redis.set(BOOK_FEED_KEY, FeedBeat("live.1", now).to_json())


async def test_a_live_copy_on_a_stale_empty_book_is_priced_from_its_reference(harness: Harness) -> None:
    await empty_book_of(harness, "before-the-restart.1")
    await harness.start_executor(TT_TUNE_EXECUTOR_BOOK_WAIT_S="0.2")
    order = make_order(1, reference_price="0.50", max_slippage_bps=200)
    await harness.route(order)
    final = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=20)
    assert final.type == epb.ORDER_EVENT_TYPE_FILLED, (final.reason, final.detail)
    [post] = harness.fake.posts_for(order.client_order_id)
    assert post.body is not None and Decimal(post.body["limitPrice"]) == Decimal("0.51")  # 0.50 + 200 bps


async def test_a_paper_copy_on_a_stale_book_has_no_book_to_fill_against(harness: Harness) -> None:
    await empty_book_of(harness, "before-the-restart.1")
    await harness.start_executor(TT_TUNE_EXECUTOR_BOOK_WAIT_S="0.2")
    order = make_order(2, mode=cpb.EXECUTION_MODE_PAPER)
    await harness.route(order)
    final = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=20)
    assert (final.type, final.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "NO_BOOK")


async def test_an_empty_book_the_venue_just_confirmed_is_no_liquidity(harness: Harness) -> None:
    await empty_book_of(harness, "live.1")
    await harness.start_executor()
    order = make_order(3)
    await harness.route(order)
    final = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=20)
    assert (final.type, final.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "NO_LIQUIDITY")
    assert harness.fake.posts_for(order.client_order_id) == []


async def test_orders_take_the_market_their_tokens_book_names_fresh_or_stale(harness: Harness) -> None:
    """The copy, priced without its stale book, and the manual BUY (SubmitOrder), priced on the fresh one, named
    another market's id: positions booked under it left their token's own market out of ingest's REST safety net
    (which schedules the markets held by the id their positions are booked under). Both take the book's."""
    other = "0x" + "d" * 64
    await empty_book_of(harness, "before-the-restart.1")
    running = await harness.start_executor(TT_TUNE_EXECUTOR_BOOK_WAIT_S="0.2")
    copy = make_order(4, reference_price="0.50", max_slippage_bps=200, condition_id=other)
    await harness.route(copy)
    final = await eventually(lambda: harness.terminal(copy.client_order_id), timeout_s=20)
    assert final.type == epb.ORDER_EVENT_TYPE_FILLED, (final.reason, final.detail)
    await harness.set_book(ASSET, bids=[("0.49", "1000")], asks=[("0.50", "1000")])
    manual = make_order(5, origin=epb.ORDER_ORIGIN_MANUAL, leader_trade_id="", subscription_id="",
                        limit_price="0.51", condition_id=other.upper().replace("0X", "0x"))
    duplicate, _ = await running.admission.submit(manual)
    assert not duplicate
    final = await eventually(lambda: harness.terminal(manual.client_order_id), timeout_s=20)
    assert final.type == epb.ORDER_EVENT_TYPE_FILLED, (final.reason, final.detail)
    assert final.condition_id == CONDITION

    async def booked() -> list[tuple[str, str]] | None:
        got = rows(harness.db_url, "SELECT follower_wallet_id, condition_id FROM positions ORDER BY 1")
        return got if len(got) == 2 else None

    assert await eventually(booked) == [("w_4", CONDITION), ("w_5", CONDITION)]
