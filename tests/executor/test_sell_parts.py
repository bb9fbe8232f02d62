"""A copied SELL the executor sizes (``sell_fraction``) sells a fraction of its own subscription's part of the
position when the position keeps a split, not of the wallet's: w_1 follows leader A (sub_A, 100 shares) and leader B
(sub_B, 50); leader A closing sells sub_A's 100, never sub_B's 50. A position with no split kept (one subscription,
or none, bought it) is sized on the wallet's shares for every subscription, as before splits. Other SELLs (exits,
manual) keep being sized on the wallet's position, and no SELL ever on more than the wallet holds."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.parts import with_leftovers
from services.executor.adapters.order_store import OrderStore
from services.executor.domain.fill_math import Booking
from services.executor.domain.sell_sizing import copy_sellable, fraction_size, part_sellable, sized_on
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.executor.flip import ASKS, BIDS, NEVER, book_fills, confirm, position_split, posted_sizes, sell_order
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
W = "w_1"


@pytest.mark.parametrize(("origin", "sub", "expected"), [
    ("COPY", "sub_A", "sub_A"),
    ("COPY", "", None),  # a copy without a subscription: the wallet's
    ("TRIGGER", "sub_A", None),  # guard's exits keep their sizing
    ("MANUAL", "", None),
])
def test_sized_on(origin: str, sub: str, expected: str | None) -> None:
    assert sized_on(origin, sub) == expected


@pytest.mark.parametrize(("part", "held", "selling", "others", "expected"), [
    ("100", "150", "0", "0", D(100)),  # its part, not the wallet's 150
    ("50", "150", "0", "0", D(50)),
    ("0", "150", "0", "0", D(0)),  # another subscription's shares only
    ("100", "150", "40", "0", D(60)),  # its own SELL under way sells 40 of them
    ("100", "150", "50", "50", D(100)),  # another subscription's SELL under way takes that one's shares
    ("100", "150", "75", "0", D(25)),  # a SELL of no subscription's (manual) might take them: held back
    ("100", "150", "130", "50", D(20)),  # never more than the wallet's shares not being sold
    ("100", "150", "40", "60", D(100)),  # more listed as others' than under way: never more than its part
])
def test_part_sellable(part: str, held: str, selling: str, others: str, expected: Decimal) -> None:
    assert part_sellable(D(part), D(held), D(selling), D(others)) == expected


SPLIT = {"sub_A": D(100), "sub_B": D(50)}
OTHERS = "they belong to other subscriptions of the wallet"


@pytest.mark.parametrize(("parts", "sub", "selling", "others", "expected"), [
    # no split kept (NULL): the wallet's shares not being sold, whichever subscription the copy is of
    (None, "sub_A", "0", "0", D(150)),  # its opener
    (None, "sub_B", "0", "0", D(150)),  # another subscription of the wallet
    (None, "sub_A2", "0", "0", D(150)),  # one re-created after its opener sub_A was stopped
    (None, "sub_B", "40", "40", D(110)),  # less every SELL under way, whoever's
    (None, "sub_B", "150", "0", D(0)),
    # a split kept: its own part
    (SPLIT, "sub_A", "0", "0", D(100)),
    (SPLIT, "sub_B", "0", "0", D(50)),
    (SPLIT, "sub_A", "30", "30", D(100)),  # sub_B's SELL under way takes sub_B's shares
    (SPLIT, "sub_A", "30", "0", D(70)),  # one of its own or of no subscription's might take its shares
    (SPLIT, "sub_A", "50", "20", D(70)),
    (SPLIT, "sub_B", "60", "0", ("NOTHING_HELD", "subscription sub_B holds 50 of the follower's 150 shares (60 already"
                                                 " being sold)")),
    (SPLIT, "sub_A", "140", "50", D(10)),  # never more than the wallet's shares not being sold
    # a split kept, no part in it: the wallet's shares are other subscriptions'
    (SPLIT, "sub_C", "0", "0",
     ("NOTHING_HELD", f"subscription sub_C holds none of the follower's 150 shares: {OTHERS}")),
    ({"sub_B": D(150)}, "sub_A", "0", "0",
     ("NOTHING_HELD", f"subscription sub_A holds none of the follower's 150 shares: {OTHERS}")),  # its opener sold out
    ({"sub_A": D("0.005"), "sub_B": D("149.995")}, "sub_A", "0", "0",
     ("NOTHING_HELD", f"subscription sub_A holds none of the follower's 150 shares: {OTHERS}")),  # below the step
])
def test_copy_sellable(parts: dict[str, Decimal] | None, sub: str, selling: str, others: str,
                       expected: Decimal | tuple[str, str]) -> None:
    assert copy_sellable(parts, sub, D(150), D(selling), D(others)) == expected


# w_1 bought sub_A's 100, sub_B's 50 and sub_C's 50; a manual SELL of 1.01 took of each part in proportion, then
# leaders A and C closed (their copies sold 99.49 and 49.74): sub_A keeps 0.005, sub_C 0.0075, sub_B 49.7475
PROBE = {"sub_A": D("0.005"), "sub_B": D("49.7475"), "sub_C": D("0.0075")}


@pytest.mark.parametrize(("parts", "selling", "expected", "left"), [
    # each other part below a share step: no copy of theirs can ever sell it, so the last close sells it (sub_B
    # sold 49.74 and left 0.02 held for ever, the others' 0.0125 and its own 0.0075: a step in all, not each)
    (PROBE, "0", D("49.76"), D(0)),
    ({"sub_A": D("0.009"), "sub_B": D("49.982"), "sub_C": D("0.009")}, "0", D(50), D(0)),
    ({"sub_A": D("0.009"), "sub_B": D("49.973"), "sub_C": D("0.009"), "sub_D": D("0.009")}, "0", D(50), D(0)),
    ({"sub_A": D("0.009"), "sub_B": D("49.982"), "": D("0.009")}, "0", D(50), D(0)),  # the follower's own dust
    (PROBE, "10", D("39.76"), D(0)),  # an exit under way: all the wallet's shares it does not sell
    # a part of a share step or more is a holding: its own copy sells it, never another's
    ({"sub_A": D("0.009"), "sub_B": D("49.981"), "sub_C": D("0.01")}, "0", D("49.981"), D("0.02")),
    ({"sub_A": D("0.009"), "sub_B": D("49.991"), "sub_C": D(5)}, "0", D("49.991"), D("5.01")),
    ({"sub_A": D("0.009"), "sub_B": D("49.991"), "": D(5)}, "0", D("49.991"), D("5.01")),  # the follower's own
])
def test_the_last_close_sells_every_leftover_no_other_copy_can_sell(parts: dict[str, Decimal], selling: str,
                                                                     expected: Decimal, left: Decimal) -> None:
    """What sub_B's close (leader B sold all) may sell, and what the wallet keeps once it and the SELLs under way
    (of no subscription: ``selling``) filled."""
    held = sum(parts.values(), D(0))
    sellable = copy_sellable(parts, "sub_B", held, D(selling), D(0))
    assert isinstance(sellable, Decimal)
    sold = fraction_size(sellable, D(1), D(5))
    assert isinstance(sold, Decimal)
    assert (sellable, held - D(selling) - sold) == (expected, left)


@pytest.mark.parametrize(("sellable", "wallet", "parts", "expected"), [
    ("49.7475", "49.76", PROBE, D("49.76")),  # each other part below a step on its own
    ("49.981", "50", {"sub_A": D("0.009"), "sub_B": D("49.981"), "sub_C": D("0.01")}, D("49.981")),  # sub_C's step
    ("50", "50.005", {"sub_A": D(10), "sub_B": D(50)}, D("50.005")),  # sub_A's copy of 9.995 in flight leaves 0.005
    # sub_A's copy of 9.995 in flight: its 10 are its own until it fills (0.005 and sub_C's 0.009 then stay)
    ("50", "50.014", {"sub_A": D(10), "sub_B": D(50), "sub_C": D("0.009")}, D(50)),
])
def test_with_leftovers(sellable: str, wallet: str, parts: dict[str, Decimal], expected: Decimal) -> None:
    """What sub_B's copy sells: its ``sellable``, or the ``wallet``'s shares not being sold with the others' dust."""
    assert with_leftovers(D(sellable), D(wallet), parts, "sub_B") == expected


def _bought(i: int, sub: str, shares: str, price: str) -> tuple[Ticket, Booking]:
    t = Ticket(make_order(i, follower_wallet_id=W, subscription_id=sub), INSIDERS, None, time.time_ns())
    return t, Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True,
                      time.time_ns() // 1_000_000 + i)






async def _shared(harness: Harness, *, b_bought: bool = True) -> Any:
    """The executor running; sub_A bought 100 @ 0.40 and (``b_bought``) sub_B 50 @ 0.60 of the token."""
    await harness.set_book(ASSET, BIDS, ASKS)
    running = await harness.start_executor()
    await book_fills(harness, _bought(901, "sub_A", "100", "0.40"),
                *([_bought(902, "sub_B", "50", "0.60")] if b_bought else []))
    return running


@pytest.mark.integration
@pytest.mark.parametrize(("sub", "fraction", "expected"), [
    ("sub_A", "1", D(100)),  # leader A closed: sub_A's 100, not the wallet's 150
    ("sub_A", "0.5", D(50)),
    ("sub_B", "1", D(50)),
    ("sub_C", "1", "NOTHING_HELD"),  # holds none of it: nothing sold though the wallet holds 150
])
async def test_a_fraction_sell_sells_of_its_subscriptions_part(harness: Harness, db_url: str, sub: str,
                                                                fraction: str, expected: Decimal | str) -> None:
    await _shared(harness)
    sell = sell_order(1, fraction, follower_wallet_id=W, subscription_id=sub)
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    if isinstance(expected, str):
        assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, expected)
        assert done.detail == f"subscription {sub} holds none of the follower's 150 shares: {OTHERS}"
        assert not harness.fake.posts_for(sell.client_order_id)
        return
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, sell.client_order_id) == [expected]
    others = {"sub_A": D(100), "sub_B": D(50)}
    left = {k: v - (expected if k == sub else 0) for k, v in others.items()}
    await eventually(lambda: position_split(db_url, W) == {k: v for k, v in left.items() if v})


@pytest.mark.integration
@pytest.mark.parametrize(("sub", "fraction", "expected"), [
    ("sub_A", "1", D(100)),  # its opener
    ("sub_B", "1", D(100)),  # another subscription of the wallet (its copy BUY was skipped)
    ("sub_B", "0.5", D(50)),
    ("sub_A2", "1", D(100)),  # re-created after sub_A was stopped, following the same leader
])
async def test_a_fraction_sell_of_an_unsplit_position_sells_of_the_wallets_shares(
        harness: Harness, db_url: str, sub: str, fraction: str, expected: Decimal) -> None:
    """sub_A alone bought the position (split NULL): which subscription's shares they are is not kept, so any
    subscription of the wallet sells of the wallet's 100, as before splits."""
    await _shared(harness, b_bought=False)
    assert rows(db_url, "SELECT subscription_id, subscription_shares FROM positions WHERE follower_wallet_id = %s",
                W) == [("sub_A", None)]
    sell = sell_order(1, fraction, follower_wallet_id=W, subscription_id=sub)
    await harness.route(sell)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, sell.client_order_id) == [expected]


@pytest.mark.integration
async def test_a_buy_of_another_subscription_booked_ahead_of_the_sell_is_not_sold(harness: Harness,
                                                                                    db_url: str) -> None:
    """sub_A holds 100 (split NULL: its position alone). sub_B's copy BUY is at the venue when leader A closes: sub_A's
    fraction SELL waits for the BUY's answer, then sells sub_A's 100, not the 100 + what sub_B just bought."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER
    await harness.start_executor()
    await book_fills(harness, _bought(901, "sub_A", "100", "0.40"))
    buy = make_order(1, follower_wallet_id=W, subscription_id="sub_B", leader_trade_id="lt_b1")
    sell = sell_order(2, "1", follower_wallet_id=W, subscription_id="sub_A")
    await harness.route(buy, sell)
    await eventually(lambda: harness.fake.order(buy.client_order_id))
    assert harness.fake.posts_for(sell.client_order_id) == []  # waits for the BUY's answer
    harness.fake.settle_s = 0.02
    confirm(harness, buy.client_order_id)
    done = await eventually(lambda: harness.terminal(sell.client_order_id), timeout_s=15)
    assert done.type == epb.ORDER_EVENT_TYPE_FILLED, (done.reason, done.detail)
    assert posted_sizes(harness, sell.client_order_id) == [D(100)]
    bought = D(str((await harness.terminal(buy.client_order_id)).filled_size))  # type: ignore[union-attr]
    assert bought > 0
    await eventually(lambda: position_split(db_url, W) == {"sub_B": bought})  # sub_B keeps what it bought


@pytest.mark.integration
async def test_sells_under_way_come_off_their_own_subscriptions_part(harness: Harness, db_url: str) -> None:
    """sub_A's copy SELL of 40 (sized by the router) is at the venue, unconfirmed. Then leaders A and B close: sub_A
    sells the 60 left of its part, sub_B its 50 (sub_A's SELL takes sub_A's shares, not sub_B's)."""
    running = await _shared(harness)
    running.runner.positions.max_wait_s = 1.0  # the unconfirmed SELL never ends here: the fractions go after 1 s
    harness.fake.settle_s = NEVER
    sized = make_order(1, follower_wallet_id=W, subscription_id="sub_A", side=cpb.SIDE_SELL, amount_usd="",
                       size="40", leader_trade_id="lt_a1")
    await harness.route(sized)
    await eventually(lambda: harness.fake.order(sized.client_order_id))
    a_close = sell_order(2, "1", follower_wallet_id=W, subscription_id="sub_A")
    b_close = sell_order(3, "1", follower_wallet_id=W, subscription_id="sub_B")
    await harness.route(a_close, b_close)
    await eventually(lambda: harness.fake.posts_for(a_close.client_order_id)
                     and harness.fake.posts_for(b_close.client_order_id), timeout_s=10)
    assert posted_sizes(harness, a_close.client_order_id) == [D(60)]
    assert posted_sizes(harness, b_close.client_order_id) == [D(50)]


@pytest.mark.integration
async def test_the_wallets_sizing_is_kept_for_other_sells(harness: Harness) -> None:
    """What an exit or a manual SELL is sized on (``sellable`` without a subscription): the wallet's shares."""
    running = await _shared(harness)
    store: OrderStore = running.admission.store
    assert await store.sellable(W, ASSET) == D(150)
    assert await store.sellable(W, ASSET, "sub_A") == D(100)
    assert await store.sellable(W, ASSET, "sub_C") == (
        "NOTHING_HELD", f"subscription sub_C holds none of the follower's 150 shares: {OTHERS}")
    assert await store.sellable("w_none", ASSET, "sub_A") == D(0)


@pytest.mark.integration
async def test_a_sell_under_way_of_no_subscription_is_held_back_from_every_part(harness: Harness) -> None:
    """A manual SELL of 40 (no subscription's: it might take any part's shares) is at the venue, unconfirmed. Then
    leader B closes: sub_B sells the 10 of its 50 that SELL cannot take."""
    running = await _shared(harness)
    running.runner.positions.max_wait_s = 1.0  # the unconfirmed SELL never ends here: the fraction goes after 1 s
    harness.fake.settle_s = NEVER
    manual = make_order(1, follower_wallet_id=W, subscription_id="", origin=epb.ORDER_ORIGIN_MANUAL,
                        side=cpb.SIDE_SELL, amount_usd="", size="40", leader_trade_id="")
    await harness.route(manual)
    await eventually(lambda: harness.fake.order(manual.client_order_id))
    b_close = sell_order(2, "1", follower_wallet_id=W, subscription_id="sub_B")
    await harness.route(b_close)
    await eventually(lambda: harness.fake.posts_for(b_close.client_order_id), timeout_s=10)
    assert posted_sizes(harness, b_close.client_order_id) == [D(10)]
