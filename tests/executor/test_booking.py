"""Booking writes each fill's fee shares into ``fills``: guard's PnL, folded from those rows, holds what the
executor's positions hold. A position is booked under the market its orders name, where the router counts it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal as D

import psycopg
import pytest

from common.marketstate import BookSnapshot
from common.storage import MIGRATIONS_DIR, create_pool
from services.executor.adapters import fill_store
from services.executor.domain.fill_math import Booking
from services.executor.domain.order_intake import IntakeRules, prepare
from services.executor.domain.ticket import INSIDERS, PAPER, Ticket
from services.guard.adapters.perf_store import PerfStore
from services.guard.domain import perf_rules
from services.router.adapters.store import RouterStore
from services.router.outbound import market_of
from tests.executor.conftest import ASSET, CONDITION, make_order
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


def _ticket(i: int, side: int) -> Ticket:
    return Ticket(make_order(i, follower_wallet_id="w_1", subscription_id="sub_1", side=side), PAPER, None,
                  time.time_ns())


@pytest.mark.parametrize(("buy_fee", "sell_fee", "fees", "realized"), [
    ("2", "0", [D(2), D(0)], D(-1)),
    ("0", "0", [D(0), D(0)], D(0)),
    ("2", "0.5", [D(2), D(0)], D(-1)),  # a SELL's fee is not taken in shares: the row keeps 0
])
async def test_fills_keep_the_fee_shares_of_a_buy(db_url: str, buy_fee: str, sell_fee: str, fees: list[D],
                                                  realized: D) -> None:
    now_ms = time.time_ns() // 1_000_000
    # BUY 100 @ 0.50, then SELL what the position holds @ 0.50
    buy = (_ticket(1, cpb.SIDE_BUY), Booking("fill_1", D(100), D("0.5"), D(50), D(buy_fee), True, now_ms))
    held = D(100) - D(buy_fee)
    sell = (_ticket(2, cpb.SIDE_SELL), Booking("fill_2", held, D("0.5"), held / 2, D(sell_fee), True, now_ms + 1))
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            booked = await fill_store.book(cur, [buy, sell])
        assert [b.effect.position.size for b in booked] == [held, D(0)]
        async with pool.connection() as conn:
            rows = await (await conn.execute("SELECT side, fee_shares FROM fills ORDER BY fill_time")).fetchall()
            position = await (await conn.execute("SELECT size, realized_pnl_usd FROM positions")).fetchone()
        assert [(r["side"], r["fee_shares"]) for r in rows] == [("BUY", fees[0]), ("SELL", fees[1])]
        assert position is not None and position["size"] == 0
        assert abs(position["realized_pnl_usd"] - realized) < D("0.000001")  # the average price is rounded
        # guard folds the same rows to the same holding and PnL
        fills, _ = await PerfStore(pool, lambda: datetime.now(UTC)).fills_since("sub_1", None)
        assert [f.fee_shares for f in fills] == fees
        assert perf_rules.fold(fills) == perf_rules.Ledger(realized, {})
    finally:
        await pool.close()


OTHER = "0x" + "d" * 64  # another market's id, well formed
WALLET = "w_c"
_COPY, _MANUAL, _EXIT = epb.ORDER_ORIGIN_COPY, epb.ORDER_ORIGIN_MANUAL, epb.ORDER_ORIGIN_TRIGGER


def _stored(db_url: str, condition_id: str, origin: str, size: int) -> None:
    """The position row as a life before left it: OPEN with ``size`` shares, or CLOSED."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, state, origin) VALUES (%s, %s, %s, %s, %s, 0.4, %s, %s, %s)",
                     (WALLET, ASSET, condition_id, "0x" + "1" * 40, size, D(size) * D("0.4"),
                      "OPEN" if size else "CLOSED", origin))


async def _book_one(db_url: str, condition_id: str, origin: int, buying: bool, fill_id: str) -> None:
    o = make_order(7, follower_wallet_id=WALLET, subscription_id="" if origin != _COPY else "sub_1", origin=origin,
                   side=cpb.SIDE_BUY if buying else cpb.SIDE_SELL, condition_id=condition_id)
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [(Ticket(o, INSIDERS, None, time.time_ns()),
                                         Booking(fill_id, D(10), D("0.4"), D(4), D(0), True,
                                                 time.time_ns() // 1_000_000))])
    finally:
        await pool.close()


def _condition(db_url: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT condition_id FROM positions WHERE follower_wallet_id = %s", (WALLET,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("row", "booking", "kept"), [
    # a position booked under another market's id (a manual order the terminal named wrongly, before intake took
    # the book's) takes its own market's once an order of it names it, in this life or the next
    ((OTHER, "MANUAL", 100), (CONDITION, _COPY, True), CONDITION),
    ((OTHER, "MANUAL", 100), (CONDITION, _EXIT, False), CONDITION),
    ((OTHER, "MANUAL", 0), (CONDITION, _MANUAL, True), CONDITION),
    # a booking naming none keeps the row's
    ((OTHER, "MANUAL", 100), ("", _COPY, True), OTHER),
    ((CONDITION, "COPY", 100), ("0xc", _EXIT, False), CONDITION),  # an exit's malformed id names no market
    # a new life is booked under its opening order's id, as a new row is: a copy of a trade without conditionId,
    # which the router capped by its token
    ((CONDITION, "COPY", 0), ("", _COPY, True), ""),
    # a copy's life under none stays under none while its exits (and manual orders) name the market: the router
    # reads it under the token as long as it lasts
    (("", "COPY", 100), (CONDITION, _EXIT, False), ""),
    (("", "COPY", 100), (CONDITION, _MANUAL, True), ""),
    # a position under none that the router does not key by its token (EXTERNAL, MANUAL) takes the market's
    (("", "EXTERNAL", 100), (CONDITION, _COPY, True), CONDITION),
    (("", "MANUAL", 100), (CONDITION, _EXIT, False), CONDITION),
], ids=["wrong-id+copy", "wrong-id+exit", "wrong-id-closed+manual", "wrong-id+copy-naming-none",
        "exit-malformed-id", "new-life-by-copy-naming-none", "copy-life-under-none+exit",
        "copy-life-under-none+manual", "external-under-none+copy", "manual-under-none+exit"])
async def test_a_position_is_booked_under_the_market_its_orders_name(
        db_url: str, row: tuple[str, str, int], booking: tuple[str, int, bool], kept: str) -> None:
    """One positions row per (wallet, asset) for every life, which kept the first id it was booked under: a wrong
    well-formed one (booked before every order took its book's) stayed for good, and the safety net checked the
    wrong market, the Position route joined on it and the router counted the position against it."""
    _stored(db_url, *row)
    await _book_one(db_url, *booking, fill_id="fill_c")
    assert _condition(db_url) == kept


async def test_a_copy_of_a_trade_without_condition_id_stays_where_the_router_counts_it(db_url: str) -> None:
    """The router counts a copy of a trade without conditionId against ``market_of('', asset)``: its position,
    BUY then a partial exit (guard's exit names the position's id, none, and intake would fill in the book's), is
    read there, the whole cost still held."""
    book = BookSnapshot(ASSET, CONDITION, ((D("0.39"), D("1000")),), ((D("0.40"), D("1000")),), D("0.01"),
                        int(time.time() * 1000), int(time.time() * 1000))
    rules = IntakeRules(live_configured=True)
    buy = prepare(make_order(8, follower_wallet_id=WALLET, condition_id="", amount_usd="40"), book, rules,
                  time.time_ns())
    exit_ = prepare(make_order(9, follower_wallet_id=WALLET, condition_id="", origin=_EXIT, side=cpb.SIDE_SELL,
                               amount_usd="", size="25", leader_trade_id="", trigger_id="trg_1"),
                    book, rules, time.time_ns())
    assert not buy.refused and not exit_.refused
    now_ms = time.time_ns() // 1_000_000
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        for fill_id, p, shares in (("fill_b", buy, D(100)), ("fill_s", exit_, D(25))):
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await fill_store.book(cur, [(p.ticket, Booking(fill_id, shares, D("0.40"), shares * D("0.40"),
                                                               D(0), True, now_ms))])
        market = market_of("", ASSET)
        store = RouterStore(pool)
        view = await store.load(leader_trade_id="lt_next", leader="0x" + "e" * 40, asset_id=ASSET, market=market,
                                wallets=[WALLET], pnl_day_ms=None, funding_wallets=[])
        await store.close()
    finally:
        await pool.close()
    agg = view.positions[WALLET]
    assert (agg.market_cost_usd, sorted(agg.markets)) == (D(30), [market]), (
        f"router reads ${agg.market_cost_usd} in the market it caps the copy by; markets held {sorted(agg.markets)}")


@pytest.mark.parametrize("taken_in", ["now", "before"], ids=["taken-now", "stored-by-an-older-executor"])
async def test_a_manual_order_with_a_checksummed_proxy_is_booked_under_the_lower_case_wallet(
        db_url: str, taken_in: str) -> None:
    """``GET /positions?wallet=`` looks the wallet up in lower case: a position booked under the proxy as the
    trading terminal spelt it (checksummed) was listed under no spelling of it. An order an older executor stored
    as sent (a resting GTC filling after the upgrade) is booked so too."""
    o = make_order(8, follower_wallet_id=WALLET, subscription_id="", origin=_MANUAL,
                   follower_proxy="0x6Af75C1b9d2A0cE3E4bF0a1dD2e3f4A5b6C7d8E9")
    prepared = prepare(o, None, IntakeRules(live_configured=True), time.time_ns())
    assert not prepared.refused, prepared.life
    if taken_in == "before":
        prepared.ticket.order.follower_proxy = "0x6Af75C1b9d2A0cE3E4bF0a1dD2e3f4A5b6C7d8E9"
    pool = await create_pool(db_url, min_size=1, max_size=1, autocommit=True)
    try:
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await fill_store.book(cur, [(prepared.ticket, Booking("fill_m", D(10), D("0.4"), D(4), D(0), True,
                                                                  time.time_ns() // 1_000_000))])
    finally:
        await pool.close()
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT wallet FROM positions WHERE follower_wallet_id = %s", (WALLET,)).fetchall()
    assert rows == [("0x6af75c1b9d2a0ce3e4bf0a1dd2e3f4a5b6c7d8e9",)]


async def test_the_migration_lower_cases_stored_proxies_of_an_address_form_and_nothing_else(db_url: str) -> None:
    """Positions booked before intake lower-cased the proxy kept the trading terminal's checksummed spelling."""
    stored = {1: "0x6Af75C1b9d2A0cE3E4bF0a1dD2e3f4A5b6C7d8E9", 2: "0X" + "AB" * 20, 3: "0x" + "ab" * 20,
              4: "", 5: "0xABC", 6: "0x" + "G" * 40}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i, wallet in stored.items():
            conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                         " cost_usd, state, origin) VALUES (%s, %s, %s, %s, 10, 0.4, 4, 'OPEN', 'MANUAL')",
                         (f"w_{i}", ASSET, CONDITION, wallet))
        versions = "SELECT follower_wallet_id, xmin::text FROM positions"
        before = dict(conn.execute(versions).fetchall())
        for _ in range(2):  # again: nothing more to change
            conn.execute((MIGRATIONS_DIR / "0810_wallet_proxies_lower_case.sql").read_text().encode())
        got = dict(conn.execute("SELECT follower_wallet_id, wallet FROM positions").fetchall())
        after = dict(conn.execute(versions).fetchall())
    assert got == {f"w_{i}": w for i, w in {**stored, 1: stored[1].lower(), 2: "0x" + "ab" * 20}.items()}
    assert {k for k in before if after[k] != before[k]} == {"w_1", "w_2"}  # no other row written
