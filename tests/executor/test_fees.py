"""A BUY's fee (``feeShares``, cumulative) that the venue reports after the shares it belongs to were booked, or
beyond the fill it comes with, is taken off the holding, once: alone it is a fills row of size 0 (no USD, not a
copy), the holding falls by it while its cost stays (but for a fee that takes every share: that cost is lost, as a
closing SELL frees it). Shares a fee takes from other subscriptions' parts are fills rows of theirs. Never more
than the order's shares filled; a SELL's fee is not taken in shares."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from common.decimals import ZERO
from common.ids import hash_id
from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.domain import venue_orders as v
from services.executor.domain.fill_math import Booking, fill_booking, settle
from services.executor.domain.order_lifecycle import OrderLife, State
from services.executor.domain.position_math import Position, apply_fill
from services.executor.domain.subscription_shares import Part
from services.executor.domain.ticket import INSIDERS, PAPER, Ticket
from services.guard.adapters.perf_store import PerfStore
from services.guard.domain import perf_rules
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
BUY, SELL = cpb.SIDE_BUY, cpb.SIDE_SELL


def _ticket(side: int, filled: str) -> Ticket:
    """An order with ``filled`` shares booked at 0.50, no fee."""
    return Ticket(epb.Order(client_order_id="co_1", side=side), INSIDERS, None, 0, notional_booked=D(filled) / 2)


def _answer(filled: str, fee: str, *, buying: bool = True) -> v.VenueOrder:
    """The venue's answer: ``filled`` shares at 0.50 (all delivered), ``fee`` shares of fee said."""
    usd, shares = D(filled) / 2, D(filled)
    return v.VenueOrder("io", "co_1", "cancelled", D(filled), D("0.5"), *((usd, shares) if buying else (shares, usd)),
                        D(fee))


Step = tuple[str, str, v.VenueOrder | None]  # shares booked before, after, the venue's answer


def _fill_id(key: str) -> str:
    return hash_id("fill", "co_1", "fee", key[4:]) if key.startswith("fee ") else hash_id("fill", "co_1", key)


@pytest.mark.parametrize(("side", "steps", "booked", "fee_after"), [
    # the fee comes with a larger fill
    (BUY, [("0", "40", _answer("40", "0.4"))], [(D(40), D("0.4"), D(20), True, "40")], "0.4"),
    # a fee larger than its fill: the fill books it whole (40 booked without one, 0.1 more, 0.4 for the 40.1)
    (BUY, [("0", "40", _answer("40", "0")), ("40", "40.1", _answer("40.1", "0.4"))],
     [(D(40), ZERO, D(20), True, "40"), (D("0.1"), D("0.4"), D("0.05"), False, "40.1")], "0.4"),
    # the fee alone (the final answer of a fill booked without one): size 0, no USD, not a copy; again as it grows
    (BUY, [("0", "40", _answer("40", "0")), ("40", "40", _answer("40", "0.4")), ("40", "40", _answer("40", "0.5"))],
     [(D(40), ZERO, D(20), True, "40"), (ZERO, D("0.4"), ZERO, False, "fee 0.4"),
      (ZERO, D("0.1"), ZERO, False, "fee 0.5")], "0.5"),
    # replayed (the same answer again, or after a restart: the booked fee is the order row's): nothing more, and a
    # smaller one takes nothing back
    (BUY, [("40", "40", _answer("40", "0.4")), ("40", "40", _answer("40", "0.4")), ("40", "40", _answer("40", "0.3"))],
     [(ZERO, D("0.4"), ZERO, False, "fee 0.4"), None, None], "0.4"),
    # above the shares filled: capped at them, and nothing more after
    (BUY, [("40", "40", _answer("40", "50")), ("40", "40", _answer("40", "50"))],
     [(ZERO, D(40), ZERO, False, "fee 40"), None], "40"),
    (BUY, [("0", "1", _answer("1", "3"))], [(D(1), D(1), D("0.5"), True, "1")], "1"),
    # the answer reports shares not booked yet (matched, not final): their fee waits for them
    (BUY, [("40", "40", _answer("100", "1")), ("40", "100", _answer("100", "1"))],
     [None, (D(60), D(1), D(30), False, "100")], "1"),
    (BUY, [("40", "40", None)], [None], "0"),  # no answer (an event of the executor's own)
    # a SELL's fee is not taken in shares: counted with its fill as before, never booked alone
    (SELL, [("0", "40", _answer("40", "0.4", buying=False)), ("40", "40", _answer("40", "0.5", buying=False))],
     [(D(40), D("0.4"), D(20), True, "40"), None], "0.4"),
], ids=["with-larger-fill", "larger-than-its-fill", "alone", "replayed", "above-filled-capped", "above-fill-capped",
        "not-booked-yet", "no-answer", "sell"])
def test_fill_booking_books_the_fee_beyond_what_is_booked(
        side: int, steps: list[Step], booked: list[tuple[Decimal, Decimal, Decimal, bool, str] | None],
        fee_after: str) -> None:
    t = _ticket(side, steps[0][0])
    got = []
    for i, (before, after, answer) in enumerate(steps):
        was = OrderLife("co_1", State.PARTIALLY_FILLED, filled_size=D(before), avg_price=D("0.5"))
        life = OrderLife("co_1", State.CANCELLED, filled_size=D(after), avg_price=D("0.5"))
        got.append(fill_booking(t, was, life, answer, i))
    assert got == [None if b is None else Booking(_fill_id(b[4]), b[0], D("0.5"), b[2], b[1], b[3], i)
                   for i, b in enumerate(booked)]
    assert t.fee_booked == D(fee_after)


HELD = Position(D(40), D("0.5"), D(20))


@pytest.mark.parametrize(("pos", "buying", "size", "fee", "after", "exposure", "realized", "closed"), [
    # a fill of 0.1 with a fee of 0.4: the holding loses 0.3, the cost grows by the 0.1's
    (HELD, True, "0.1", "0.4", Position(D("39.7"), D("0.50503778"), D("20.05")), D("0.05"), ZERO, False),
    # the fee alone: 0.4 shares leave, no USD moves, the average cost rises
    (HELD, True, "0", "0.4", Position(D("39.6"), D("0.50505051"), D(20)), ZERO, ZERO, False),
    # every share: what they cost is lost, as a closing SELL frees its cost (no cost left for the next life)
    (HELD, True, "0", "40", Position(ZERO, ZERO, ZERO, D(-20)), D(-20), D(-20), True),
    (HELD, True, "0", "50", Position(ZERO, ZERO, ZERO, D(-20)), D(-20), D(-20), True),  # never below zero
    (HELD, True, "0.1", "40.1", Position(ZERO, ZERO, ZERO, D("-20.05")), D(-20), D("-20.05"), True),
    (HELD, True, "0", "0", HELD, ZERO, ZERO, False),  # nothing
    (Position(), True, "1", "3", Position(ZERO, ZERO, ZERO, D("-0.5")), ZERO, D("-0.5"), False),  # none held
    # a SELL's fee is not in shares
    (HELD, False, "0", "0.4", HELD, ZERO, ZERO, False),
    (HELD, False, "40", "0.4", Position(ZERO, ZERO, ZERO, ZERO), D(-20), ZERO, True),
])
def test_apply_fill_takes_a_fee_beyond_its_fill_off_the_holding(pos: Position, buying: bool, size: str, fee: str,
                                                               after: Position, exposure: Decimal, realized: Decimal,
                                                               closed: bool) -> None:
    e = apply_fill(pos, buying=buying, size=D(size), price=D("0.5"), fee_shares=D(fee))
    assert (e.position, e.exposure_delta_usd, e.realized_pnl_usd, e.opened, e.closed) == (
        after, exposure, realized, False, closed)


A_B = {"sub_A": Part(D(100), D(40)), "sub_B": Part(D(50), D(30))}  # 150 shares, $70
Stats = dict[str, tuple[Decimal, Decimal]]  # subscription → (exposure, realized PnL) changes


@pytest.mark.parametrize(("split", "sub", "size", "fee", "expected", "stats"), [
    # the BUY's shares went to its subscription's part: its fee comes off it, the cost stays
    (A_B, "sub_A", "0", "0.4", {"sub_A": Part(D("99.6"), D(40)), "sub_B": Part(D(50), D(30))}, {"sub_A": (ZERO, ZERO)}),
    (A_B, "sub_B", "0.1", "0.4", {"sub_A": Part(D(100), D(40)), "sub_B": Part(D("49.7"), D("30.05"))},
     {"sub_B": (D("0.05"), ZERO)}),
    # its part sold since: what it holds (its cost freed as a loss, as a SELL taking every share of a part frees
    # it), then the others' as a SELL takes them (in proportion to their shares), their cost staying
    ({"sub_A": Part(D(2), D(1)), "sub_B": Part(D(50), D(30))}, "sub_A", "0", "3", {"sub_B": Part(D(49), D(30))},
     {"sub_A": (D(-1), D(-1)), "sub_B": (ZERO, ZERO)}),
    (A_B, "sub_C", "0", "3", {"sub_A": Part(D(98), D(40)), "sub_B": Part(D(49), D(30))},
     {"sub_A": (ZERO, ZERO), "sub_B": (ZERO, ZERO), "sub_C": (ZERO, ZERO)}),
    # a fill whose fee takes it whole, its part holding none: what it cost is lost
    ({"sub_B": Part(D(50), D(30))}, "sub_A", "1", "1", {"sub_B": Part(D(50), D(30))}, {"sub_A": (ZERO, D("-0.5"))}),
    # the fee closes the position: every part's cost is lost, as a closing SELL frees it
    (A_B, "sub_A", "0", "150", {}, {"sub_A": (D(-40), D(-40)), "sub_B": (D(-30), D(-30))}),
])
def test_a_fee_comes_off_its_own_subscriptions_part(split: dict[str, Part], sub: str, size: str, fee: str,
                                                    expected: dict[str, Part], stats: Stats) -> None:
    o = epb.Order(client_order_id="co_1", origin=epb.ORDER_ORIGIN_COPY, subscription_id=sub, follower_wallet_id="w",
                  asset_id="a", side=BUY)
    before = Position(sum((p.shares for p in split.values()), ZERO), ZERO, sum((p.cost_usd for p in split.values()),
                                                                              ZERO))
    positions, splits = {("w", "a"): before}, {("w", "a"): dict(split)}
    booking = Booking("f_1", D(size), D("0.5"), D(size) / 2, D(fee), False, 0)
    _, got, _ = settle(positions, [(Ticket(o, PAPER, None, 0), booking)], splits)  # type: ignore[arg-type]
    assert splits[("w", "a")] == expected
    pos = positions[("w", "a")]  # the parts' sum
    assert (pos.size, pos.cost_usd) == (before.size + D(size) - D(fee), sum((p.cost_usd for p in expected.values()),
                                                                            ZERO))
    assert pos.realized_pnl_usd == sum((pnl for _, pnl in stats.values()), ZERO)
    assert {k: (s.copied, s.exposure, s.pnl) for k, s in got.items()} == {k: (0, *v) for k, v in stats.items()}


@pytest.mark.integration
async def test_a_fee_booked_alone_is_one_fills_row_that_guard_folds_as_the_executor_books(db_url: str) -> None:
    """The fee alone is a fills row of size 0 (no USD): written once however often it is booked (a retried
    write), it takes the shares off the position and off what guard folds, the cost staying."""
    t = Ticket(make_order(1, follower_wallet_id="w_1", subscription_id="sub_1"), PAPER, None, time.time_ns())
    now_ms = time.time_ns() // 1_000_000
    fill = Booking("fill_1", D(40), D("0.5"), D(20), ZERO, True, now_ms)
    fee = Booking(hash_id("fill", t.client_order_id, "fee", "0.4"), ZERO, D("0.5"), ZERO, D("0.4"), False, now_ms + 1)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        for batch in ([(t, fill), (t, fee)], [(t, fee)], [(t, fill), (t, fee)]):
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await fill_store.book(cur, batch)
        fills, _ = await PerfStore(pool, lambda: datetime.now(UTC)).fills_since("sub_1", None)
    finally:
        await pool.close()
    assert rows(db_url, "SELECT side, size, notional_usd, fee_shares FROM fills ORDER BY fill_time") == [
        ("BUY", D(40), D(20), D(0)), ("BUY", D(0), D(0), D("0.4"))]
    assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D("39.6"), D(20))]
    assert rows(db_url, "SELECT copied, exposure_usd FROM subscription_stats") == [(1, D(20))]
    assert perf_rules.fold(fills) == perf_rules.Ledger(ZERO, {ASSET: (D("39.6"), D(20))})


def _buy(n: int, sub: str, side: int = BUY) -> Ticket:
    return Ticket(make_order(n, follower_wallet_id="w_1", subscription_id=sub, side=side), PAPER, None, time.time_ns())


def _filled(t: Ticket, size: str, ms: int) -> Booking:
    """``size`` shares at 0.50, no fee, ``ms`` after now."""
    return Booking(hash_id("fill", t.client_order_id, size), D(size), D("0.5"), D(size) / 2, ZERO, True,
                   time.time_ns() // 1_000_000 + ms)


def _fee_alone(t: Ticket, fee: str, ms: int) -> Booking:
    return Booking(hash_id("fill", t.client_order_id, "fee", fee), ZERO, D("0.5"), ZERO, D(fee), False,
                   time.time_ns() // 1_000_000 + ms)


async def _book(db_url: str, *batches: list[tuple[Ticket, Booking]]) -> perf_rules.Ledger:
    """Book each batch in a transaction of its own: what guard folds of sub_B's fills then."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        for batch in batches:
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await fill_store.book(cur, batch)
        fills, _ = await PerfStore(pool, lambda: datetime.now(UTC)).fills_since("sub_B", None)
    finally:
        await pool.close()
    return perf_rules.fold(fills)


@pytest.mark.integration
async def test_a_fee_taken_from_another_subscriptions_part_is_a_fills_row_of_that_part(db_url: str) -> None:
    """A buys 40 (its fee not reported yet), B 50; A sells its 40; then A's BUY reports its fee, 0.4 shares: they
    come off B's part (A's holds none), with a fills row of B's (a BUY of size 0, its fee the shares taken, under
    an order id of its own, as a SELL's parts are) so that guard folds B's 49.6 shares too."""
    a_buy, b_buy, a_sell = _buy(1, "sub_A"), _buy(2, "sub_B"), _buy(3, "sub_A", SELL)
    b = await _book(db_url, [(a_buy, _filled(a_buy, "40", 0))], [(b_buy, _filled(b_buy, "50", 1))],
                    [(a_sell, _filled(a_sell, "40", 2))], [(a_buy, _fee_alone(a_buy, "0.4", 3))])
    assert rows(db_url, "SELECT size, subscription_shares FROM positions") == [
        (D("49.6"), {"sub_B": ["49.6", "25"]})]  # the cost stays
    assert rows(db_url, "SELECT subscription_id, order_id, side, size, notional_usd, fee_shares FROM fills"
                        " WHERE size = 0 ORDER BY subscription_id") == [
        ("sub_A", a_buy.client_order_id, "BUY", D(0), D(0), D("0.4")),
        ("sub_B", fill_store.PART_ORDER_PREFIX + a_buy.client_order_id, "BUY", D(0), D(0), D("0.4"))]
    assert b == perf_rules.Ledger(ZERO, {ASSET: (D("49.6"), D(25))})
    assert rows(db_url, "SELECT subscription_id, exposure_usd, realized_pnl_usd FROM subscription_stats"
                        " ORDER BY 1") == [("sub_A", D(0), D(0)), ("sub_B", D(25), D(0))]


@pytest.mark.integration
async def test_a_fee_that_closes_a_position_leaves_no_cost_to_the_next_life(db_url: str) -> None:
    """A buys 40 (fee not reported yet) and sells 39.6 (what the venue holds); the BUY's final answer reports its
    fee, 0.4 shares: the position closes, the $0.20 those shares cost realized as lost (as guard folds it). The
    next BUY of 10 opens a life that cost $5, not $5.20."""
    buy, sell, again = _buy(1, "sub_A"), _buy(2, "sub_A", SELL), _buy(3, "sub_A")
    await _book(db_url, [(buy, _filled(buy, "40", 0))], [(sell, _filled(sell, "39.6", 1))],
                [(buy, _fee_alone(buy, "0.4", 2))])
    assert rows(db_url, "SELECT state, size, cost_usd, realized_pnl_usd FROM positions") == [
        ("CLOSED", D(0), D(0), D("-0.2"))]
    assert rows(db_url, "SELECT exposure_usd, realized_pnl_usd FROM subscription_stats") == [(D(0), D("-0.2"))]
    await _book(db_url, [(again, _filled(again, "10", 3))])
    assert rows(db_url, "SELECT state, size, cost_usd, avg_price FROM positions") == [("OPEN", D(10), D(5), D("0.5"))]


@pytest.mark.integration
async def test_a_fee_that_closes_a_position_and_a_buy_reopening_it_in_one_batch_keep_both_lives(db_url: str) -> None:
    """As above, the fee and the next BUY booked in one journal batch: the life the fee closed is copied into
    position_history (the batch is cut after a fee beyond its fill, as after a SELL)."""
    buy, sell, again = _buy(1, "sub_A"), _buy(2, "sub_A", SELL), _buy(3, "sub_A")
    await _book(db_url, [(buy, _filled(buy, "40", 0))], [(sell, _filled(sell, "39.6", 1))],
                [(buy, _fee_alone(buy, "0.4", 2)), (again, _filled(again, "10", 3))])
    assert rows(db_url, "SELECT state, size, cost_usd FROM positions") == [("OPEN", D(10), D(5))]
    assert rows(db_url, "SELECT state, size, cost_usd, realized_pnl_usd FROM position_history") == [
        ("CLOSED", D(0), D(0), D("-0.2"))]


BIDS = [("0.49", "500")]


def _with_fee(o: Any, fee: str) -> None:
    """The fake's answers for ``o`` carry ``feeShares`` (cumulative, as the contract says)."""
    plain = o.to_json
    o.to_json = lambda: {**plain(), "feeShares": fee}


async def _rests_with_40_booked(harness: Harness) -> tuple[epb.Order, Any]:
    """GTC BUY 100 @ 0.50 resting with 40 matched and booked (no fee reported yet): the order and the fake's."""
    await harness.set_book(ASSET, BIDS, [("0.50", "40")])
    await harness.start_executor()
    o = make_order(1, order_type=epb.ORDER_TYPE_GTC, amount_usd="", size="100", limit_price="0.50")
    await harness.route(o)

    async def partially_filled() -> bool:
        return any(e.type == epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED for e in await harness.events_of(o.client_order_id))

    await eventually(partially_filled, timeout_s=10)
    fo = harness.fake.order(o.client_order_id)
    assert fo is not None and fo.filled_size == D(40)
    return o, fo


@pytest.mark.integration
async def test_a_fee_reported_with_the_final_answer_of_a_booked_fill_is_booked(harness: Harness,
                                                                               db_url: str) -> None:
    """The venue cancels the rest; its final answer says the 40 shares cost 0.4 shares of fee: the wallet holds
    39.6, bought for the same $20 (one copy)."""
    o, fo = await _rests_with_40_booked(harness)
    _with_fee(fo, "0.4")
    fo.status = "cancelled"
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_CANCELLED and D(done.fee_shares) == D("0.4")
    assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D("39.6"), D(20))]
    assert rows(db_url, "SELECT size, notional_usd, fee_shares FROM fills ORDER BY fill_time") == [
        (D(40), D(20), D(0)), (D(0), D(0), D("0.4"))]
    assert rows(db_url, "SELECT fee_shares FROM orders") == [(D("0.4"),)]  # what a restart starts from
    assert rows(db_url, "SELECT copied, exposure_usd FROM subscription_stats") == [(1, D(20))]


@pytest.mark.integration
async def test_a_fee_larger_than_the_fill_it_comes_with_is_booked_whole(harness: Harness, db_url: str) -> None:
    """0.1 more matches and the venue reports the cumulative fee of the 40.1 shares, 0.4, then cancels the rest:
    the wallet holds 40.1 - 0.4 = 39.7 shares."""
    o, fo = await _rests_with_40_booked(harness)
    _with_fee(fo, "0.4")
    fo.filled_size += D("0.1")
    fo.cost += D("0.05")
    fo.status = "cancelled"
    done = await eventually(lambda: harness.terminal(o.client_order_id), timeout_s=10)
    assert done.type == epb.ORDER_EVENT_TYPE_CANCELLED and D(done.filled_size) == D("40.1")
    assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D("39.7"), D("20.05"))]
    assert rows(db_url, "SELECT size, fee_shares FROM fills ORDER BY fill_time") == [(D(40), D(0)), (D("0.1"),
                                                                                                   D("0.4"))]
