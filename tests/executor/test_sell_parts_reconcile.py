"""Reconciliation and the copied SELL sized on its own subscription's part: a correction of a position its opening
subscription bought alone keeps it without a split (NULL), so every subscription of the wallet still sells the
wallet's shares (one re-created after its opener was stopped mirrors its leader's exit); a copy the venue refused for
lack of shares is sent again for no more than its own subscription's part as the correction scaled it, never for the
shares of another subscription whose leader still holds."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from services.executor.adapters import fill_store
from services.executor.adapters.order_store import OrderStore
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking
from services.executor.domain.reconcile import AtVenue, reconcile, resize_size
from services.executor.domain.ticket import INSIDERS, Ticket
from services.executor.ports import Answer
from services.executor.reconciling import Reconciler
from tests.executor.conftest import ASSET, CONDITION, Harness, make_order, rows
from tests.executor.flip import resized_end
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

W = "w_1"
WALLET = LiveWallet(W, "0x" + "1" * 40)


SPLIT = {"sub_A": D(40), "sub_B": D(20)}  # sub_A bought 100 and sub_B 50; the venue holds 60 of the 150


@pytest.mark.parametrize(("wanted", "held", "parts", "sized_on", "expected"), [
    # a copy of a position that keeps a split: no more than its own part as corrected, not the wallet's count
    ("100", "60", SPLIT, "sub_A", D(40)),
    ("30", "60", SPLIT, "sub_A", D(30)),  # less than its part: what it wanted
    ("100", "60", SPLIT, "sub_B", D(20)),
    (None, "60", SPLIT, "sub_A", D(40)),  # no size: all of its part
    ("100", "30", SPLIT, "sub_A", D(20)),  # the venue counts fewer than the parts say: they are scaled to it
    ("100", "60", SPLIT, "sub_C", "NOTHING_HELD"),  # no part: the wallet's shares are other subscriptions'
    ("100", "60", {"sub_B": D(60)}, "sub_A", "NOTHING_HELD"),
    # not corrected (its token was busy this round): the parts as booked, scaled down to the venue's count
    ("100", "60", {"sub_A": D(100), "sub_B": D(50)}, "sub_A", D(40)),
    ("100", "60", {"sub_A": D(100), "sub_B": D(50)}, "sub_B", D(20)),
    ("100", "50", {"sub_A": D(100), "sub_B": D(50)}, "sub_A", D("33.33333333")),  # rounded down
    # no split kept (its opener's alone, or one that does not add up): the wallet's count, for every subscription
    ("100", "60", None, "sub_A", D(60)),
    ("100", "60", None, "sub_A2", D(60)),  # re-created after its opener was stopped
    ("50", "60", None, "sub_A", D(50)),
    # not a copy (an exit, a manual SELL): the wallet's count, whatever the split
    ("100", "60", SPLIT, None, D(60)),
    (None, "60", SPLIT, None, D(60)),
])
def test_a_refused_sell_is_resized_on_what_its_subscription_holds(
        wanted: str | None, held: str, parts: dict[str, D] | None, sized_on: str | None, expected: D | str) -> None:
    got = resize_size(None if wanted is None else D(wanted), D(held), parts, sized_on)
    assert (got[0] if isinstance(got, tuple) else got) == expected


def _fill(i: int, sub: str, side: int, shares: str, price: str, **kw: Any) -> tuple[Ticket, Booking]:
    t = Ticket(make_order(i, follower_wallet_id=W, subscription_id=sub, side=side, **kw), INSIDERS, None,
               time.time_ns())
    return t, Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True,
                      time.time_ns() // 1_000_000 + i)


async def _book(pool: AsyncConnectionPool[Any], *fills: tuple[Ticket, Booking]) -> None:
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, list(fills))


async def _reconcile(pool: AsyncConnectionPool[Any], count: str) -> int:
    """One reconciliation of w_1 with the venue counting ``count`` shares of the token; corrections applied."""
    store = ReconcileStore(pool)
    view = await store.view(W, 0.0)
    venue = [AtVenue(ASSET, CONDITION, "Yes", D(count), D("0.40"), False)] if D(count) else []
    corrections = reconcile(view.booked, venue, ())
    agreeing = [v for v in venue if v.asset_id not in {c.asset_id for c in corrections}]
    return len(await store.apply(WALLET, corrections, agreeing, view.subscriptions))


def _kept(db_url: str) -> tuple[D, dict[str, ss.Part] | None]:
    """The position's size and the split stored (None: none kept)."""
    [(size, kept)] = rows(db_url, "SELECT size, subscription_shares FROM positions")
    return size, None if kept is None else ss.decode(kept)


@pytest.mark.integration
@pytest.mark.parametrize(("opener", "origin", "copies_sell"), [
    # sub_A's copy bought it; sub_A was stopped, sub_A2 follows the same leader: every subscription of the wallet
    # sells the wallet's shares, the re-created one too (its leader's exit)
    ("sub_A", epb.ORDER_ORIGIN_COPY, D(99)),
    # the follower bought it by hand: no subscription's, no leader's exit sells it
    ("", epb.ORDER_ORIGIN_MANUAL, "NOTHING_HELD"),
])
async def test_a_correction_of_a_position_its_opener_bought_alone_keeps_no_split(
        db_url: str, pool: AsyncConnectionPool[Any], opener: str, origin: int, copies_sell: D | str) -> None:
    await _book(pool, _fill(1, opener, cpb.SIDE_BUY, "100", "0.40", origin=origin))
    assert _kept(db_url) == (D(100), None)
    assert await _reconcile(pool, "99") == 1  # one share moved outside the engine
    assert _kept(db_url) == (D(99), None)
    store = OrderStore(pool)
    sold = [await store.sellable(W, ASSET, s) for s in ("sub_A", "sub_A2", "sub_B")]
    assert [x[0] if isinstance(x, tuple) else x for x in sold] == [copies_sell] * 3
    assert await store.sellable(W, ASSET) == D(99)  # exits and manual SELLs: the wallet's shares


@pytest.mark.integration
async def test_a_correction_keeps_the_split_of_a_position_another_subscription_holds(
        db_url: str, pool: AsyncConnectionPool[Any]) -> None:
    """sub_A opened the position and sold its part; sub_B's 50 are left: a one-part split kept, not its opener's."""
    await _book(pool, _fill(1, "sub_A", cpb.SIDE_BUY, "100", "0.40"), _fill(2, "sub_B", cpb.SIDE_BUY, "50", "0.60"))
    await _book(pool, _fill(3, "sub_A", cpb.SIDE_SELL, "100", "0.50"))
    assert _kept(db_url) == (D(50), {"sub_B": ss.Part(D(50), D(30))})
    assert await _reconcile(pool, "40") == 1
    assert _kept(db_url) == (D(40), {"sub_B": ss.Part(D(40), D(24))})
    store = OrderStore(pool)
    assert await store.sellable(W, ASSET, "sub_B") == D(40)
    held = await store.sellable(W, ASSET, "sub_A")
    assert isinstance(held, tuple) and held[0] == "NOTHING_HELD"  # sub_B's shares: its leader still holds


@pytest.mark.integration
async def test_a_round_drops_the_split_a_correction_once_stored_for_a_position_its_opener_holds_alone(
        db_url: str, pool: AsyncConnectionPool[Any]) -> None:
    """A correction before this fix stored {opener: whole} for a position with no split; a round that finds the
    position agreeing with the venue stores it as none again."""
    await _book(pool, _fill(1, "sub_A", cpb.SIDE_BUY, "100", "0.40"))
    rows(db_url, """UPDATE positions SET subscription_shares = '{"sub_A": ["100", "40.00"]}' RETURNING 1""")
    assert await OrderStore(pool).sellable(W, ASSET, "sub_A2") != D(100)
    assert await _reconcile(pool, "100") == 0
    assert _kept(db_url) == (D(100), None)
    assert await OrderStore(pool).sellable(W, ASSET, "sub_A2") == D(100)


async def _filled(harness: Harness, *orders: epb.Order) -> None:
    await harness.route(*orders)
    await eventually(lambda: harness.all_terminal(list(orders)), timeout_s=20)


@pytest.mark.integration
async def test_a_refused_copy_is_resized_on_its_own_subscriptions_part(harness: Harness) -> None:
    """w_1 follows leader A (sub_A bought 100) and leader B (sub_B bought 50); 90 of the 150 left the wallet outside
    the engine. Leader A closes: the router sold sub_A's 100, the venue refuses them, and the correction scales the
    parts to 40 and 20. The copy is sent again for sub_A's 40, not the wallet's 60: leader B still holds."""
    await harness.set_book(ASSET, [("0.39", "100000")], [("0.40", "100000")])
    harness.fake.holdings.register(CONDITION, [(ASSET, "Yes")])
    running = await harness.start_executor()
    await _filled(harness, *(make_order(i, follower_wallet_id=W, subscription_id=sub, amount_usd=usd,
                                        follower_proxy=WALLET.wallet)
                             for i, sub, usd in ((1, "sub_A", "40"), (2, "sub_B", "20"))))
    rows(harness.db_url, "UPDATE positions SET updated_at = now() - interval '1 minute' RETURNING 1")  # settled
    harness.fake.enforce_positions = True
    harness.fake.holdings.terminal_trade(W, ASSET, "SELL", D(90), D("0.45"))
    sell = make_order(3, follower_wallet_id=W, subscription_id="sub_A", side=cpb.SIDE_SELL, amount_usd="",
                      size="100", follower_proxy=WALLET.wallet)
    await harness.route(sell)

    done = await resized_end(harness)
    refused = await harness.terminal(sell.client_order_id)
    assert refused is not None and refused.reason == "INVALID_ORDER_NOT_ENOUGH_BALANCE"
    assert (done.type, done.subscription_id, done.filled_size) == (epb.ORDER_EVENT_TYPE_FILLED, "sub_A", "40")
    assert running.reconciler is not None and running.reconciler.stats.resized == 1
    [(size, cost, kept, opener)] = rows(harness.db_url, "SELECT size, cost_usd, subscription_shares, subscription_id"
                                                        " FROM positions")
    assert {k: p.shares for k, p in ss.split_of(ss.decode(kept), size, cost, opener).items()} == {"sub_B": D(20)}


class _VenueHolding60:
    """The Insiders API counting 60 shares of the token (90 of the 150 booked left the wallet outside the engine)."""

    async def positions(self, wallet_id: str) -> Answer:
        return Answer(200, {"positions": [{"tokenId": ASSET, "size": "60", "avgPrice": "0.45",
                                           "conditionId": CONDITION, "outcome": "Yes"}]})


async def _none_known(ids: list[str]) -> set[str]:
    return set()


@pytest.mark.integration
async def test_a_refused_copy_resized_while_its_token_is_busy_never_sells_another_subscriptions_part(
        pool: AsyncConnectionPool[Any]) -> None:
    """sub_A bought 100 and sub_B 50 a moment ago (within the settling grace: reconciliation corrects nothing this
    round); sub_A's copy SELL of 100 is refused for lack of shares and the venue counts 60. It is re-sized on sub_A's
    part scaled to that count, 40: on the booked part (100) capped by the count, 60, it sold 20 of sub_B's shares."""
    sent: list[epb.Order] = []

    async def resubmit(order: epb.Order) -> None:
        sent.append(order)

    await _book(pool, _fill(1, "sub_A", cpb.SIDE_BUY, "100", "0.40", follower_proxy=WALLET.wallet),
                _fill(2, "sub_B", cpb.SIDE_BUY, "50", "0.60", follower_proxy=WALLET.wallet))
    rec = Reconciler(ReconcileStore(pool), _VenueHolding60(), None, interval_s=300.0, known=_none_known, grace_s=10.0,
                     resubmit=resubmit)
    refused = make_order(3, follower_wallet_id=W, subscription_id="sub_A", side=cpb.SIDE_SELL, amount_usd="",
                         size="100", follower_proxy=WALLET.wallet)
    assert await rec.resizer.resize(Ticket(refused, INSIDERS, None, time.time_ns())) is True
    assert [D(o.size) for o in sent] == [D(40)]

