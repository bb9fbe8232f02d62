"""A position bought by two subscriptions of one follower wallet (two leaders buying the same token) settles each
subscription by its own part: its cost freed, its payout less its cost realized, its own settlement fill.

(From the review of the position lifecycle: settlement freed the whole position's cost and booked the whole payout
against the position's opening subscription only.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import orjson
import psycopg
import pytest

from common.storage import MIGRATIONS_DIR, create_pool
from services.executor.adapters import fill_store
from services.executor.adapters.settlement_store import SettlementStore
from services.executor.domain.fill_math import Booking
from services.executor.domain.settlement import Resolution
from services.executor.domain.ticket import INSIDERS, Ticket
from services.guard.adapters.perf_store import PerfStore
from services.guard.domain import perf_rules
from tests.executor.conftest import ASSET, CONDITION, make_order, rows
from tradingtools.common.v1 import common_pb2 as cpb

pytestmark = pytest.mark.integration

NO = "2" * 77
MIGRATION = Path(MIGRATIONS_DIR) / "0620_position_subscription_shares.sql"


def _buy(i: int, sub: str, shares: str, price: str, now_ms: int) -> tuple[Ticket, Booking]:
    t = Ticket(make_order(i, follower_wallet_id="w_1", subscription_id=sub, side=cpb.SIDE_BUY), INSIDERS, None,
               time.time_ns())
    return t, Booking(f"fill_{i}", D(shares), D(price), D(shares) * D(price), D(0), True, now_ms + i)


def _stats(db_url: str) -> dict[str, tuple[D, D]]:
    return {s: (e, p) for s, e, p in rows(
        db_url, "SELECT subscription_id, exposure_usd, realized_pnl_usd FROM subscription_stats")}


async def _book_a_and_b(db_url: str, now_ms: int) -> None:
    """sub_A opens the position (100 @ 0.40 = $40), sub_B adds to it (50 @ 0.40 = $20): one positions row."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [_buy(1, "sub_A", "100", "0.40", now_ms),
                                        _buy(2, "sub_B", "50", "0.40", now_ms)])
    finally:
        await pool.close()


async def _settle(db_url: str, winner: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        await SettlementStore(pool).settle(Resolution(CONDITION, (ASSET, NO), winner))
    finally:
        await pool.close()


async def _guard_ledgers(db_url: str, *subs: str) -> dict[str, perf_rules.Ledger]:
    """What guard's performance rules fold from each subscription's fills."""
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        fills, _ = await PerfStore(pool, lambda: datetime.now(UTC)).fills_since_many(dict.fromkeys(subs))
        return {s: perf_rules.fold(f) for s, f in fills.items()}
    finally:
        await pool.close()


async def test_settlement_frees_and_realizes_per_subscription_that_paid(db_url: str) -> None:
    await _book_a_and_b(db_url, time.time_ns() // 1_000_000)
    assert {s: e for s, (e, _) in _stats(db_url).items()} == {"sub_A": D(40), "sub_B": D(20)}
    # the market resolves, the held token wins
    await _settle(db_url, ASSET)
    # each subscription: its cost freed, its payout less its cost realized (100 - 40, 50 - 20)
    assert _stats(db_url) == {"sub_A": (D(0), D(60)), "sub_B": (D(0), D(30))}
    # one settlement fill per subscription, for its own shares: guard's rules see each one's shares leave
    assert sorted(rows(db_url, "SELECT subscription_id, size, notional_usd FROM fills WHERE order_id LIKE 'settle_%%'"
                               " ORDER BY 1")) == [("sub_A", D(100), D(100)), ("sub_B", D(50), D(50))]
    assert await _guard_ledgers(db_url, "sub_A", "sub_B") == {"sub_A": perf_rules.Ledger(D(60), {}),
                                                               "sub_B": perf_rules.Ledger(D(30), {})}
    assert rows(db_url, "SELECT size, cost_usd, realized_pnl_usd, subscription_shares FROM positions") == [
        (D(0), D(0), D(90), None)]


async def test_a_losing_market_realizes_each_subscriptions_own_cost(db_url: str) -> None:
    await _book_a_and_b(db_url, time.time_ns() // 1_000_000)
    await _settle(db_url, NO)
    assert _stats(db_url) == {"sub_A": (D(0), D(-40)), "sub_B": (D(0), D(-20))}


async def test_the_split_is_kept_on_the_position_only_while_it_is_shared(db_url: str) -> None:
    now_ms = time.time_ns() // 1_000_000
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [_buy(1, "sub_A", "100", "0.40", now_ms)])
        # the opening subscription's alone: nothing kept (NULL reads as its whole position)
        assert rows(db_url, "SELECT subscription_id, subscription_shares FROM positions") == [("sub_A", None)]
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [_buy(2, "sub_B", "50", "0.40", now_ms)])
    finally:
        await pool.close()
    [(split,)] = rows(db_url, "SELECT subscription_shares FROM positions")
    assert {k: [D(x) for x in v] for k, v in split.items()} == {"sub_A": [D(100), D(40)], "sub_B": [D(50), D(20)]}


def _legacy_position(db_url: str, shares: dict[str, list[str]] | None) -> None:
    """A position of sub_A as an executor before splits booked it (100 shares, $40), and both subscriptions' stats."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, id, state, origin, subscription_id, venue, subscription_shares)"
                     " VALUES ('w_1', %s, %s, '0xw', 100, 0.4, 40, 'pos_1', 'OPEN', 'COPY', 'sub_A', 'INSIDERS', %s)",
                     (ASSET, CONDITION, orjson.dumps(shares).decode() if shares is not None else None))
        conn.execute("INSERT INTO subscription_stats (subscription_id, exposure_usd)"
                     " VALUES ('sub_A', 40), ('sub_B', 5)")


async def test_a_position_booked_before_splits_were_kept_is_its_opening_subscriptions(db_url: str) -> None:
    _legacy_position(db_url, None)
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = conn.execute("SELECT xmin::text, subscription_shares FROM positions").fetchall()
        conn.execute(MIGRATION.read_text().encode())  # as applied to a database that has positions: no row rewritten
        assert conn.execute("SELECT xmin::text, subscription_shares FROM positions").fetchall() == before == [
            (before[0][0], None)]
    # sub_B buys 50 @ 0.40 into it: the split starts from sub_A's whole position
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [_buy(2, "sub_B", "50", "0.40", time.time_ns() // 1_000_000)])
    finally:
        await pool.close()
    [(split,)] = rows(db_url, "SELECT subscription_shares FROM positions")
    assert {k: [D(x) for x in v] for k, v in split.items()} == {"sub_A": [D(100), D(40)], "sub_B": [D(50), D(20)]}
    await _settle(db_url, ASSET)
    assert _stats(db_url) == {"sub_A": (D(0), D(60)), "sub_B": (D(5), D(30))}


async def test_a_split_an_older_executor_left_behind_is_not_trusted(db_url: str) -> None:
    # a split of 60 + 20 shares written before an older executor booked more: it no longer adds up to the position
    _legacy_position(db_url, {"sub_A": ["60", "24"], "sub_B": ["20", "8"]})
    await _settle(db_url, ASSET)
    assert _stats(db_url) == {"sub_A": (D(0), D(60)), "sub_B": (D(5), D(0))}  # the opening subscription's, as before
