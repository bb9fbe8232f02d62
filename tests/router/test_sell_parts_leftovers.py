"""The running router (real PostgreSQL, Redis and gRPC) sizing copied SELLs of a position that keeps a split: the
last leader's close sells the other parts' sub-cent leftovers, and another subscription's SELL in flight beyond its
own part is held back from every part.

w_1 follows LEADER (sub_A) and LEADER_B (sub_B): the executor booked sub_A's 100 shares and sub_B's 50."""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from common import reservations
from common.decimals import MIN_HELD_SHARES
from services.executor.adapters.fill_store import book
from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from tests.router.booked import bought
from tests.router.conftest import COND, LEADER, YES, Stack, subscription
from tests.router.test_sell_parts_routed import LEADER_B, LEADER_C, _decided, _route, _sql, _start
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

D = Decimal


async def _sold(db_url: str, coid: str, sub: str, origin: int, size: str) -> None:
    """What the executor books when the venue fills a SELL of w_1's (``sub``'s, "" for none)."""
    order = epb.Order(client_order_id=coid, subscription_id=sub, follower_wallet_id="w_1",
                      follower_proxy="0x" + "6a" * 20, asset_id=YES, condition_id=COND, outcome="Yes",
                      side=cpb.SIDE_SELL, origin=origin, size=size, mode=cpb.EXECUTION_MODE_LIVE)  # type: ignore[arg-type]
    ticket = Ticket(order=order, venue="INSIDERS", request=None, created_ns=time.time_ns())
    fill = Booking(fill_id=f"fill_{coid}", size=D(size), price=D("0.5"), notional=D(size) / 2, fee_shares=D(0),
                   first_fill=True, fill_time_ms=int(time.time() * 1000))
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        await book(conn.cursor(row_factory=dict_row), [(ticket, fill)])


def _split(db_url: str) -> dict[str, Decimal]:
    [(size, cost, kept, opener)] = _sql(db_url, "SELECT size, cost_usd, subscription_shares, subscription_id"
                                                " FROM positions")
    return {k: p.shares for k, p in ss.split_of(ss.decode(kept), size, cost, opener).items()}  # type: ignore[arg-type]


async def test_the_last_leaders_close_sells_the_sub_cent_leftovers(stack: Stack) -> None:
    """The follower sold 50 by hand (parts 66.66666667 and 33.33333333); leader A closes: sub_A sells 66.66 of its
    part. Leader B closes: sub_B sells the wallet's 33.34, sub_A's 0.00666667 with them (33.33 before: 0.01 share
    stayed held for ever, an open position for the caps, each part below the step, no copy able to sell it)."""
    await _start(stack)
    await _sold(stack.db_url, "man_1", "", epb.ORDER_ORIGIN_MANUAL, "50")
    assert _split(stack.db_url) == {"sub_A": D("66.66666667"), "sub_B": D("33.33333333")}
    a = await _route(stack, "lt_a_close", LEADER, "100")
    assert _decided(a) == [("sub_A", "66.66")]  # its own part: sub_B's 33.33 are not its leader's to sell
    await _sold(stack.db_url, a.orders[0].client_order_id, "sub_A", epb.ORDER_ORIGIN_COPY, "66.66")
    await reservations.release(stack.redis, a.orders[0].client_order_id)
    b = await _route(stack, "lt_b_close", LEADER_B, "50")
    assert _decided(b) == [("sub_B", "33.34")]
    await _sold(stack.db_url, b.orders[0].client_order_id, "sub_B", epb.ORDER_ORIGIN_COPY, b.orders[0].size)
    [(left,)] = _sql(stack.db_url, "SELECT size FROM positions")
    assert D(str(left)) < MIN_HELD_SHARES


async def test_the_last_leaders_close_sells_leftovers_of_several_parts(stack: Stack) -> None:
    """sub_C bought 50 too; the follower sold 1.01 by hand; leaders A and C closed (their copies sold 99.49 and
    49.74). Leader B's close sells the wallet's 49.76: sub_A's 0.005 and sub_C's 0.0075 with them (49.74 before: the
    wallet kept 0.02 for ever, a step in all but each part below it, no copy able to sell it)."""
    await _start(stack, subs=(subscription("sub_A", "w_1"), subscription("sub_B", "w_1", leader=LEADER_B),
                              subscription("sub_C", "w_1", leader=LEADER_C)))
    await bought(stack.db_url, "co_buy_c", "sub_C", "50", "0.5")
    await _sold(stack.db_url, "man_1", "", epb.ORDER_ORIGIN_MANUAL, "1.01")
    await _sold(stack.db_url, "co_a", "sub_A", epb.ORDER_ORIGIN_COPY, "99.49")
    await _sold(stack.db_url, "co_c", "sub_C", epb.ORDER_ORIGIN_COPY, "49.74")
    assert _split(stack.db_url) == {"sub_A": D("0.005"), "sub_B": D("49.7475"), "sub_C": D("0.0075")}
    b = await _route(stack, "lt_b_close", LEADER_B, "50")
    assert _decided(b) == [("sub_B", "49.76")]
    await _sold(stack.db_url, b.orders[0].client_order_id, "sub_B", epb.ORDER_ORIGIN_COPY, b.orders[0].size)
    [(left,)] = _sql(stack.db_url, "SELECT size FROM positions")
    assert D(str(left)) == 0


async def test_a_copy_in_flight_beyond_its_own_part_is_held_back_from_every_part(stack: Stack) -> None:
    """sub_A bought 100 alone (no split kept): leader B's close is mirrored on the wallet's shares, a SELL of 100 by
    sub_B, which has no part. sub_C's BUY of 50 fills while it is in flight (split sub_A 100, sub_C 50): the 100
    sub_B sells may take 33.33 of sub_C's 50 and more, so leader C's close is not sized on sub_C's 50 (that sold all
    sub_A's shares left, whose leader still holds them)."""
    await _start(stack, b_bought=False, subs=(subscription("sub_A", "w_1"),
                                             subscription("sub_B", "w_1", leader=LEADER_B),
                                             subscription("sub_C", "w_1", leader=LEADER_C)))
    b = await _route(stack, "lt_b_close", LEADER_B, "50")
    assert _decided(b) == [("sub_B", "100")]  # no split kept: the wallet's shares
    await bought(stack.db_url, "co_buy_c", "sub_C", "50", "0.5")
    assert _split(stack.db_url) == {"sub_A": D(100), "sub_C": D(50)}
    c = await _route(stack, "lt_c_close", LEADER_C, "80")
    assert _decided(c) == [("sub_C", "NOTHING_HELD")]
