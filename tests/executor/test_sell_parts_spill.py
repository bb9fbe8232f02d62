"""A copied SELL the executor sizes on its subscription's part, while other SELLs of the position are under way, and
when the other parts keep only sub-cent leftovers.

A SELL takes its own subscription's shares first and THE REST FROM EVERY OTHER PART in proportion
(``subscription_shares.take``). w_1 holds sub_A's 100, sub_B's 50 and a third part's 50 (sub_C's, or the follower's
own, no subscription's). A guard exit of 150 on sub_A's trigger takes sub_A's 100 and 25 of each other part; were
sub_B's copy sized on its 50 meanwhile, it would sell the third part's shares, whose leader (or owner) sold nothing.
So only other subscriptions' COPY SELLs are set aside from a part, each up to its own part; an exit, a manual SELL,
and what a copy may sell beyond its own part count against every part.

A proportional take leaves parts with sub-cent residues (1e-8 shares): when each other part keeps less than a share
step on its own (or all of them less than one in all), a copy is sized on the wallet's shares not being sold, or
that dust would stay held for ever (an open position for the caps) with no part able to sell it."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.decimals import MIN_HELD_SHARES
from common.parts import others_own
from services.executor.domain.fill_math import Booking
from services.executor.domain.sell_sizing import copy_sellable, fraction_size
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.executor.flip import ASKS, BIDS, NEVER, book_fills, confirm, position_split, posted_sizes, sell_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
W = "w_1"
THREE = {"sub_A": D(100), "sub_B": D(50), "sub_C": D(50)}


@pytest.mark.parametrize(("parts", "copies", "sub", "expected"), [
    (THREE, {}, "sub_B", D(0)),
    (THREE, {"sub_A": D(80)}, "sub_B", D(80)),  # within its part: it takes sub_A's shares only
    (THREE, {"sub_A": D(100)}, "sub_B", D(100)),
    (THREE, {"sub_A": D(150)}, "sub_B", D(100)),  # 50 beyond its part come off the others: not set aside
    (THREE, {"sub_A": D(150), "sub_C": D(20)}, "sub_B", D(120)),
    (THREE, {"sub_B": D(30)}, "sub_B", D(0)),  # its own copies are never set aside
    (THREE, {"sub_D": D(30)}, "sub_B", D(0)),  # a subscription with no part takes every share from the others
    (THREE, {"sub_A": D(0)}, "sub_B", D(0)),
])
def test_others_own(parts: dict[str, Decimal], copies: dict[str, Decimal], sub: str, expected: Decimal) -> None:
    assert others_own(parts, copies, sub) == expected


def _sellable(parts: dict[str, Decimal] | None, sub: str, selling: str, copies: dict[str, Decimal]
              ) -> Decimal | tuple[str, str]:
    """What the store sizes a copy on: the wallet holds the parts' sum (200 with no split kept)."""
    held = sum(parts.values(), D(0)) if parts else D(200)
    return copy_sellable(parts, sub, held, D(selling), others_own(parts or {}, copies, sub))


RESIDUE = {"sub_A": D("0.00666667"), "sub_B": D("33.33333333")}  # sub_A closed after a manual SELL took 50 of 150


@pytest.mark.parametrize(("parts", "sub", "selling", "copies", "expected"), [
    # SELLs under way of another subscription: set aside up to their own part, what they sell beyond it is not
    (THREE, "sub_B", "0", {}, D(50)),
    (THREE, "sub_B", "80", {"sub_A": D(80)}, D(50)),  # sub_A's copy of 80 takes sub_A's shares only
    (THREE, "sub_B", "120", {"sub_A": D(120)}, D(30)),  # 20 beyond sub_A's 100 may all come off sub_B
    (THREE, "sub_C", "120", {"sub_A": D(120)}, D(30)),
    (THREE, "sub_B", "160", {"sub_A": D(100), "sub_C": D(60)}, D(40)),
    (THREE, "sub_B", "30", {"sub_D": D(30)}, D(20)),  # a subscription with no part: every share it sells is others'
    # an exit, a manual SELL (not a copy: listed in no subscription's copies) counts against every part
    (THREE, "sub_B", "40", {}, D(10)),
    (THREE, "sub_B", "150", {}, ("NOTHING_HELD", "subscription sub_B holds 50 of the follower's 200 shares (150"
                                                 " already being sold)")),  # the reviewer's guard exit
    (THREE, "sub_B", "190", {"sub_A": D(100), "sub_C": D(50)}, D(10)),  # never more than the wallet's not being sold
    # sub-cent leftovers of the other parts go with the copy: the wallet's shares not being sold
    (RESIDUE, "sub_B", "0", {}, D("33.34")),
    (RESIDUE, "sub_A", "0", {}, ("NOTHING_HELD", "subscription sub_A holds none of the follower's 33.34 shares: they"
                                                 " belong to other subscriptions of the wallet")),
    ({"sub_A": D("0.009"), "sub_B": D(50)}, "sub_B", "0", {}, D("50.009")),
    ({"sub_A": D("0.01"), "sub_B": D(50)}, "sub_B", "0", {}, D(50)),  # a share step is a holding: it stays sub_A's
    ({"sub_A": D("0.005"), "": D("0.004"), "sub_B": D(50)}, "sub_B", "0", {}, D("50.009")),  # 0.009 in all
    ({"sub_A": D("0.006"), "": D("0.004"), "sub_B": D(50)}, "sub_B", "0", {}, D("50.01")),  # 0.01 in all, dust each
    ({"sub_A": D(10), "sub_B": D(50)}, "sub_B", "9.995", {"sub_A": D("9.995")}, D("50.005")),  # A keeps 0.005
    ({"sub_A": D(10), "sub_B": D(50)}, "sub_B", "10", {"sub_A": D(10)}, D(50)),
    ({"sub_A": D(10), "sub_B": D(50)}, "sub_B", "9.995", {}, D("40.005")),  # an exit of 9.995 might take sub_B's
    # no split kept: the wallet's shares not being sold, whoever's SELLs are under way
    (None, "sub_B", "120", {"sub_A": D(120)}, D(80)),
])
def test_copy_sellable_with_sells_under_way_and_leftovers(parts: dict[str, Decimal] | None, sub: str, selling: str,
                                                         copies: dict[str, Decimal],
                                                         expected: Decimal | tuple[str, str]) -> None:
    assert _sellable(parts, sub, selling, copies) == expected


def test_copy_sellable_keeps_its_signature() -> None:
    """copy_sellable(parts, subscription, held, selling, others_selling), others_selling as :func:`others_own`."""
    assert copy_sellable(THREE, "sub_B", D(200), D(120), D(100)) == D(30)
    assert copy_sellable(RESIDUE, "sub_B", D("33.34"), D(0), D(0)) == D("33.34")
    assert fraction_size(D("33.34"), D(1), D(5)) == D("33.34")  # the whole of it: nothing left held


def _ticket(i: int, sub: str, side: int = cpb.SIDE_BUY, origin: int = epb.ORDER_ORIGIN_COPY) -> Ticket:
    return Ticket(make_order(i, follower_wallet_id=W, subscription_id=sub, side=side, origin=origin),
                  INSIDERS, None, time.time_ns())


def _fill(i: int, shares: str, price: str) -> Booking:
    return Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True, time.time_ns() // 1_000_000 + i)






def _held(db_url: str) -> Decimal:
    [(size,)] = rows(db_url, "SELECT size FROM positions WHERE follower_wallet_id = %s", W)
    return Decimal(size)


async def _three_parts(harness: Harness, db_url: str, third: str) -> Any:
    """The executor running, its venue confirming nothing until told; w_1 holds sub_A's 100, sub_B's 50 and
    ``third``'s 50 (the follower's own when ""); a SELL sized after a SELL under way goes after 1 s."""
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    running.runner.positions.max_wait_s = 1.0  # the unconfirmed SELL never ends here: the fraction goes after 1 s
    harness.fake.settle_s = NEVER
    await book_fills(harness, (_ticket(901, "sub_A"), _fill(901, "100", "0.40")),
                (_ticket(902, "sub_B"), _fill(902, "50", "0.60")),
                (_ticket(903, third, origin=epb.ORDER_ORIGIN_COPY if third else epb.ORDER_ORIGIN_MANUAL),
                 _fill(903, "50", "0.50")))
    assert position_split(db_url, W) == {"sub_A": 100, "sub_B": 50, third: 50}
    return running


def _sell_under_way(i: int, sub: str, origin: int, size: str) -> epb.Order:
    return make_order(i, follower_wallet_id=W, subscription_id=sub, origin=origin, side=cpb.SIDE_SELL,
                      amount_usd="", size=size, leader_trade_id=f"lt_u{i}" if origin == epb.ORDER_ORIGIN_COPY else "",
                      trigger_id="tr_1" if origin == epb.ORDER_ORIGIN_TRIGGER else "")


@pytest.mark.integration
@pytest.mark.parametrize("third", ["sub_C", ""])  # a third subscription, or the follower's own shares
async def test_a_copy_sized_while_an_exit_is_under_way_never_sells_a_third_parts_shares(
        harness: Harness, db_url: str, third: str) -> None:
    """A guard exit of 150 (a ladder step of the wallet's 200, on sub_A's trigger) is at the venue, unconfirmed, when
    leader B's close is sized: the exit may take 50 of sub_B's shares, so sub_B's copy sells nothing now (sized on
    its 50, it sold 25 of the third part's). Once the exit fills, the third part keeps the 25 the exit left it."""
    await _three_parts(harness, db_url, third)
    exit_ = _sell_under_way(1, "sub_A", epb.ORDER_ORIGIN_TRIGGER, "150")
    await harness.route(exit_)
    await eventually(lambda: harness.fake.order(exit_.client_order_id))
    b_close = sell_order(2, "1", follower_wallet_id=W, subscription_id="sub_B")
    await harness.route(b_close)

    async def refused_or_posted() -> bool:
        return bool(harness.fake.posts_for(b_close.client_order_id) or await harness.terminal(b_close.client_order_id))

    await eventually(refused_or_posted, timeout_s=15)
    assert posted_sizes(harness, b_close.client_order_id) == []
    done = await harness.terminal(b_close.client_order_id)
    assert done is not None and (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, "NOTHING_HELD")
    confirm(harness, exit_.client_order_id)
    await eventually(lambda: position_split(db_url, W) == {"sub_B": 25, third: 25}, timeout_s=15)


@pytest.mark.integration
async def test_a_copy_sized_while_another_subscriptions_copy_sells_beyond_its_part(harness: Harness,
                                                                                    db_url: str) -> None:
    """sub_A's copy SELL of 120 (20 beyond sub_A's 100, sized when no split was known) is at the venue when leader B
    closes: sub_B's copy sells the 30 of its 50 those 20 cannot take (50 before), and sub_C, whose leader sold
    nothing, keeps all but its share of sub_A's excess."""
    await _three_parts(harness, db_url, "sub_C")
    a_copy = _sell_under_way(1, "sub_A", epb.ORDER_ORIGIN_COPY, "120")
    await harness.route(a_copy)
    await eventually(lambda: harness.fake.order(a_copy.client_order_id))
    b_close = sell_order(2, "1", follower_wallet_id=W, subscription_id="sub_B")
    await harness.route(b_close)
    await eventually(lambda: harness.fake.order(b_close.client_order_id), timeout_s=15)
    assert posted_sizes(harness, b_close.client_order_id) == [D(30)]
    confirm(harness, a_copy.client_order_id)  # sub_A's 100, and 10 of each other part
    await eventually(lambda: position_split(db_url, W) == {"sub_B": 40, "sub_C": 40}, timeout_s=15)
    confirm(harness, b_close.client_order_id)  # sub_B's own 30
    await eventually(lambda: position_split(db_url, W) == {"sub_B": 10, "sub_C": 40}, timeout_s=15)


@pytest.mark.integration
async def test_the_last_close_sells_the_other_parts_sub_cent_leftovers(harness: Harness, db_url: str) -> None:
    """sub_A bought 100 and sub_B 50; the follower sold 50 by hand (parts 66.66666667 and 33.33333333); leader A
    closed (sub_A sold 66.66). Leader B's close sells the 33.34 the wallet holds: sub_A's 0.00666667 go with it
    (sized on sub_B's part, 33.33, they stayed held for ever, no part able to sell them)."""
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    await book_fills(harness, (_ticket(901, "sub_A"), _fill(901, "100", "0.40")),
                (_ticket(902, "sub_B"), _fill(902, "50", "0.60")))
    await book_fills(harness, (_ticket(903, "", cpb.SIDE_SELL, epb.ORDER_ORIGIN_MANUAL), _fill(903, "50", "0.50")))
    assert position_split(db_url, W) == {"sub_A": D("66.66666667"), "sub_B": D("33.33333333")}
    await book_fills(harness, (_ticket(904, "sub_A", cpb.SIDE_SELL), _fill(904, "66.66", "0.50")))
    assert position_split(db_url, W) == {"sub_A": D("0.00666667"), "sub_B": D("33.33333333")}
    b_close = sell_order(1, "1", follower_wallet_id=W, subscription_id="sub_B")
    await harness.route(b_close)
    done = await eventually(lambda: harness.terminal(b_close.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, b_close.client_order_id) == [D("33.34")]
    await eventually(lambda: _held(db_url) < MIN_HELD_SHARES, timeout_s=15)


@pytest.mark.integration
async def test_the_last_close_sells_leftovers_of_several_parts(harness: Harness, db_url: str) -> None:
    """sub_A, sub_B and sub_C bought 100, 50 and 50; the follower sold 1.01 by hand; leaders A and C closed (their
    copies sold 99.49 and 49.74). Leader B's close sells the 49.76 the wallet holds: sub_A's 0.005 and sub_C's 0.0075
    go with it (sized on sub_B's part, 49.74, the wallet kept 0.02 for ever, a step in all but no part's)."""
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    await book_fills(harness, (_ticket(901, "sub_A"), _fill(901, "100", "0.40")),
                (_ticket(902, "sub_B"), _fill(902, "50", "0.60")), (_ticket(903, "sub_C"), _fill(903, "50", "0.50")))
    await book_fills(harness, (_ticket(904, "", cpb.SIDE_SELL, epb.ORDER_ORIGIN_MANUAL), _fill(904, "1.01", "0.50")))
    await book_fills(harness, (_ticket(905, "sub_A", cpb.SIDE_SELL), _fill(905, "99.49", "0.50")),
                (_ticket(906, "sub_C", cpb.SIDE_SELL), _fill(906, "49.74", "0.50")))
    assert position_split(db_url, W) == {"sub_A": D("0.005"), "sub_B": D("49.7475"), "sub_C": D("0.0075")}
    b_close = sell_order(1, "1", follower_wallet_id=W, subscription_id="sub_B")
    await harness.route(b_close)
    done = await eventually(lambda: harness.terminal(b_close.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, b_close.client_order_id) == [D("49.76")]
    await eventually(lambda: _held(db_url) == 0, timeout_s=15)
