"""SELLs and reconciliation of a position two subscriptions of one wallet bought: a SELL takes its own
subscription's shares first and the rest from the others in proportion, each realizing against its own average
cost; a reconciliation scales every part. Guard's performance rules, which fold each subscription's fills, see the
same."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import create_pool
from services.executor.adapters import fill_store
from services.executor.adapters.reconcile_store import LiveWallet, ReconcileStore
from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking
from services.executor.domain.reconcile import AtVenue, reconcile
from services.executor.domain.subscription_shares import Part
from services.executor.domain.ticket import INSIDERS, Ticket
from services.guard.adapters.perf_store import PerfStore
from services.guard.domain import perf_rules
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _fill(i: int, sub: str, side: int, shares: str, price: str, **kw: Any) -> tuple[Ticket, Booking]:
    t = Ticket(make_order(i, follower_wallet_id="w_1", subscription_id=sub, side=side, **kw), INSIDERS, None,
               time.time_ns())
    now_ms = time.time_ns() // 1_000_000
    return t, Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True, now_ms + i)


async def _book(pool: AsyncConnectionPool[Any], *fills: tuple[Ticket, Booking]) -> None:
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await fill_store.book(cur, list(fills))


@pytest.fixture
async def pool(db_url: str) -> Any:
    """A pool on a database where sub_A bought 100 @ 0.40 ($40) and sub_B 50 @ 0.60 ($30) of one token."""
    p = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    await _book(p, _fill(1, "sub_A", cpb.SIDE_BUY, "100", "0.40"), _fill(2, "sub_B", cpb.SIDE_BUY, "50", "0.60"))
    yield p
    await p.close()


def _stats(db_url: str) -> dict[str, tuple[D, D]]:
    return {s: (e, p) for s, e, p in rows(
        db_url, "SELECT subscription_id, exposure_usd, realized_pnl_usd FROM subscription_stats")}


def _position(db_url: str) -> tuple[D, D, D, dict[str, list[D]]]:
    """The position's size, cost, realized PnL and split (as read: NULL is the opening subscription's whole)."""
    [(size, cost, pnl, kept, opener)] = rows(db_url, "SELECT size, cost_usd, realized_pnl_usd, subscription_shares,"
                                                     " subscription_id FROM positions")
    split = ss.split_of(ss.decode(kept), size, cost, opener)
    return size, cost, pnl, {k: [p.shares, p.cost_usd] for k, p in split.items()}


async def _guard(pool: AsyncConnectionPool[Any], *subs: str) -> dict[str, perf_rules.Ledger]:
    fills, _ = await PerfStore(pool, lambda: datetime.now(UTC)).fills_since_many(dict.fromkeys(subs))
    return {s: perf_rules.fold(f) for s, f in fills.items()}


@pytest.mark.parametrize(("sub", "origin"), [
    ("sub_A", epb.ORDER_ORIGIN_TRIGGER),  # an exit of the whole position on the opening subscription's trigger
    ("", epb.ORDER_ORIGIN_MANUAL),  # a manual SELL of everything
])
async def test_a_sell_of_the_whole_position_charges_every_subscription_its_part(
        db_url: str, pool: AsyncConnectionPool[Any], sub: str, origin: int) -> None:
    await _book(pool, _fill(3, sub, cpb.SIDE_SELL, "150", "0.50", origin=origin))
    # sub_A: 100 × 0.50 - 40 = +10; sub_B: 50 × 0.50 - 30 = -5
    assert _stats(db_url) == {"sub_A": (D(0), D(10)), "sub_B": (D(0), D(-5))}
    assert _position(db_url) == (D(0), D(0), D(5), {})
    # each subscription's fills show its shares leaving, the order's own fill still the whole SELL
    fills = rows(db_url, "SELECT subscription_id, order_id, size, notional_usd FROM fills WHERE side = 'SELL'"
                         " ORDER BY order_id")
    own = (sub or None, "co_test00003", D(150), D(75))
    parts = [("sub_A", "part_co_test00003", D(100), D(50))] if not sub else []
    assert fills == [own, *parts, ("sub_B", "part_co_test00003", D(50), D(25))]
    assert await _guard(pool, "sub_A", "sub_B") == {"sub_A": perf_rules.Ledger(D(10), {}),
                                                     "sub_B": perf_rules.Ledger(D(-5), {})}
    # what the order sold is its own fill alone (what the router and guard sum per order)
    assert rows(db_url, "SELECT sum(size) FROM fills WHERE order_id = 'co_test00003'") == [(D(150),)]


async def test_a_sell_takes_its_own_subscriptions_shares_first(db_url: str, pool: AsyncConnectionPool[Any]) -> None:
    await _book(pool, _fill(3, "sub_A", cpb.SIDE_SELL, "40", "0.50"))  # sub_A's leader sold: its copy sells 40
    # against sub_A's own average cost (0.40), not the position's (0.4667); sub_B untouched
    assert _stats(db_url) == {"sub_A": (D(24), D(4)), "sub_B": (D(30), D(0))}
    assert _position(db_url) == (D(110), D(54), D(4), {"sub_A": [D(60), D(24)], "sub_B": [D(50), D(30)]})
    assert rows(db_url, "SELECT count(*) FROM fills WHERE order_id LIKE 'part_%%'") == [(0,)]
    ledgers = await _guard(pool, "sub_A", "sub_B")
    assert (ledgers["sub_A"].realized, ledgers["sub_B"].realized) == (D(4), D(0))
    # then a SELL of more than sub_B holds: its 50, and 10 of sub_A's
    await _book(pool, _fill(4, "sub_B", cpb.SIDE_SELL, "60", "0.70"))
    assert _stats(db_url) == {"sub_A": (D(20), D(7)), "sub_B": (D(0), D(5))}
    assert _position(db_url) == (D(50), D(20), D(12), {"sub_A": [D(50), D(20)]})
    ledgers = await _guard(pool, "sub_A", "sub_B")
    assert (ledgers["sub_A"].realized, ledgers["sub_B"].realized) == (D(7), D(5))


async def test_a_position_sold_and_bought_again_starts_a_life_of_the_new_buyer(
        db_url: str, pool: AsyncConnectionPool[Any]) -> None:
    await _book(pool, _fill(3, "", cpb.SIDE_SELL, "150", "0.50", origin=epb.ORDER_ORIGIN_MANUAL),
                _fill(4, "sub_B", cpb.SIDE_BUY, "10", "0.50"))
    assert _position(db_url) == (D(10), D(5), D(5), {"sub_B": [D(10), D(5)]})
    assert _stats(db_url) == {"sub_A": (D(0), D(10)), "sub_B": (D(5), D(-5))}


@pytest.mark.parametrize(("count", "split", "stats"), [
    # the venue holds 120 of the 150: each part 4/5 of its shares, and its share of the cost at the position's
    # average (120 × 0.46666667 = 56.0000004) by what it paid
    (D(120), {"sub_A": [D(80), D("32.00000023")], "sub_B": [D(40), D("24.00000017")]},
     {"sub_A": (D("32.00000023"), D(0)), "sub_B": (D("24.00000017"), D(0))}),
    (D(0), {}, {"sub_A": (D(0), D(0)), "sub_B": (D(0), D(0))}),  # sold outside the engine
])
async def test_a_reconciliation_scales_every_subscriptions_part(
        db_url: str, pool: AsyncConnectionPool[Any], count: D, split: dict[str, list[D]],
        stats: dict[str, tuple[D, D]]) -> None:
    store = ReconcileStore(pool)
    view = await store.view("w_1", 0.0)
    assert view.subscriptions == {ASSET: {"sub_A": Part(D(100), D(40)), "sub_B": Part(D(50), D(30))}}
    venue = [AtVenue(ASSET, CONDITION, "Yes", count, D("0.45"), False)] if count else []
    corrections = reconcile(view.booked, venue, ())
    applied = await store.apply(LiveWallet("w_1", "0xw"), corrections, [], view.subscriptions)
    assert len(applied) == 1
    size, cost, _, got = _position(db_url)
    assert (size, sum((p[1] for p in got.values()), D(0))) == (count, cost)
    assert (got, _stats(db_url)) == (split, stats)


async def test_a_large_booking_books_the_parts_too(db_url: str, pool: AsyncConnectionPool[Any]) -> None:
    """A batch of CUSTOM_PLAN_ROWS positions or more (its statement planned for itself) with a SELL taking parts."""
    others = [(Ticket(make_order(10 + i, subscription_id="sub_X", side=cpb.SIDE_BUY), INSIDERS, None, 0),
               Booking(f"fill_x{i}", D(10), D("0.5"), D(5), D(0), True, 0))
              for i in range(fill_store.CUSTOM_PLAN_ROWS)]
    await _book(pool, *others, _fill(3, "", cpb.SIDE_SELL, "150", "0.50", origin=epb.ORDER_ORIGIN_MANUAL))
    assert _stats(db_url) == {"sub_A": (D(0), D(10)), "sub_B": (D(0), D(-5)), "sub_X": (D(80), D(0))}
    assert rows(db_url, "SELECT count(*) FROM fills WHERE order_id = 'part_co_test00003'") == [(2,)]


@pytest.mark.parametrize("count", [D(0), D(90)])
async def test_guard_sees_a_reconciliation_in_each_subscriptions_fills(
        db_url: str, pool: AsyncConnectionPool[Any], count: D) -> None:
    """Shares sold (or moved) outside the engine: reconciliation closes or shrinks the position, and each
    subscription's fills show its part leaving at its average cost, so guard's ledger (its loss-stop) holds what
    the position holds, not shares nobody has; fills_version moves so guard reads them."""
    versions = dict(rows(db_url, "SELECT subscription_id, fills_version FROM subscription_stats"))
    store = ReconcileStore(pool)
    view = await store.view("w_1", 0.0)
    venue = [AtVenue(ASSET, CONDITION, "Yes", count, D("0.45"), False)] if count else []
    assert len(await store.apply(LiveWallet("w_1", "0xw"), reconcile(view.booked, venue, ()), [],
                                 view.subscriptions)) == 1
    _, _, _, split = _position(db_url)
    ledgers = await _guard(pool, "sub_A", "sub_B")
    cents = D("0.01")  # guard folds at its own average cost: the parts' rounding (1e-8 a share) stays apart
    assert {s: tuple(v.quantize(cents) for v in ledger.assets.get(ASSET, ())) for s, ledger in ledgers.items()} == {
        s: tuple(v.quantize(cents) for v in split.get(s, ())) for s in ("sub_A", "sub_B")}
    assert all(ledger.realized.quantize(cents) == 0 for ledger in ledgers.values())  # no PnL: sold elsewhere
    after = dict(rows(db_url, "SELECT subscription_id, fills_version FROM subscription_stats"))
    assert all(after[s] == versions[s] + 1 for s in versions)
    assert rows(db_url, "SELECT count(*) FROM fills WHERE left(order_id, 10) = 'reconcile_'") == [(2,)]


@pytest.mark.parametrize("count", [D(0), D(50)])
async def test_a_correction_of_a_position_whose_average_cost_is_above_one_applies(db_url: str, count: D) -> None:
    """A BUY of 100 @ 0.99 whose fee the venue took in shares: 98 shares for $99. Its correction fill is no price
    above 1 (fills hold [0, 1]): the wallet's whole round failed on it, every round."""
    p = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        t = Ticket(make_order(1, follower_wallet_id="w_1", subscription_id="sub_A", side=cpb.SIDE_BUY), INSIDERS,
                   None, time.time_ns())
        await _book(p, (t, Booking("fill_1", D(100), D("0.99"), D(99), D(2), True, time.time_ns() // 1_000_000)))
        assert rows(db_url, "SELECT size, cost_usd FROM positions") == [(D(98), D(99))]
        store = ReconcileStore(p)
        view = await store.view("w_1", 0.0)
        venue = [AtVenue(ASSET, CONDITION, "Yes", count, D("0.99"), False)] if count else []
        assert len(await store.apply(LiveWallet("w_1", "0xw"), reconcile(view.booked, venue, ()), [],
                                     view.subscriptions)) == 1
        assert rows(db_url, "SELECT size FROM positions") == [(count,)]
        [(price, notional)] = rows(db_url, "SELECT price, notional_usd FROM fills WHERE side = 'SELL'")
        assert price == 1 and notional > 48  # the notional keeps the part's cost
    finally:
        await p.close()
