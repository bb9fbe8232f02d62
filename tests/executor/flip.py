"""Helpers of the tests of SELLs sized by the executor (``sell_fraction``): books, positions, orders, and a
fake venue that confirms nothing until a test says so (``settle_s = NEVER``, then :func:`confirm`)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import psycopg

from services.executor.adapters import fill_store
from services.executor.domain import subscription_shares as ss
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from tests.executor.conftest import ASSET, CONDITION, TERMINAL_TYPES, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

D = Decimal
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]
NEVER = 10_000.0  # the fake's settle time: matched orders stay unconfirmed until confirm()
# The subscription whose copies these tests buy and sell: a fraction SELL is sized on its own subscription's part.
SUB = "sub_flip"


def held_size(db_url: str, wallet: str) -> Decimal:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT size FROM positions WHERE follower_wallet_id = %s AND asset_id = %s",
                           (wallet, ASSET)).fetchone()
    return row[0] if row else D(0)


def buy_order(i: int, **kw: Any) -> epb.Order:
    """A copy BUY of :data:`SUB`."""
    return make_order(i, **{"subscription_id": SUB, **kw})


def sell_order(i: int, fraction: str, **kw: Any) -> epb.Order:
    base: dict[str, Any] = {"routed_time_ns": time.time_ns(), "subscription_id": SUB, **kw}
    return make_order(i, side=cpb.SIDE_SELL, amount_usd="", sell_fraction=fraction, leader_trade_id=f"lt_s{i}",
                      **base)


def confirm(h: Harness, coid: str) -> None:
    """The chain confirms this order's match now (its next status query says confirmed)."""
    o = h.fake.order(coid)
    assert o is not None, coid
    o.matched_at = time.monotonic() - 2 * NEVER


def hold_shares(db_url: str, wallet: str, size: int) -> None:
    """The wallet holds ``size`` shares :data:`SUB`'s copies bought."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                     " cost_usd, subscription_id) VALUES (%s, %s, %s, '0xa', %s, 0.4, %s, %s)",
                     (wallet, ASSET, CONDITION, size, D(size) * D("0.4"), SUB))


def order_row(db_url: str, coid: str) -> tuple[Any, ...] | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT state, size FROM orders WHERE client_order_id = %s", (coid,)).fetchone()


def posted_sizes(h: Harness, coid: str) -> list[Decimal]:
    return [D(p.body["size"]) for p in h.fake.posts_for(coid) if p.body]


async def unconfirmed_flip(harness: Harness, wallet: str, i: int) -> tuple[Any, epb.Order, epb.Order]:
    """The executor running against a venue that confirms nothing until told (:func:`confirm`), and a copy
    BUY with the fraction SELL (all) that follows it: (the running executor, the BUY, the SELL)."""
    await harness.set_book(ASSET, BIDS, ASKS)
    harness.fake.settle_s = NEVER
    running = await harness.start_executor()
    return (running, buy_order(i, follower_wallet_id=wallet, leader_trade_id="lt_b1"),
            sell_order(i + 1, "1", follower_wallet_id=wallet))


def fail_first_insert_of(running: Any, client_order_id: str, *, delay_s: float = 0.0) -> list[bool]:
    """Make the first intent INSERT that holds ``client_order_id`` fail like PostgreSQL going away (after
    ``delay_s``); the list returned gets an item once it did."""
    store = running.admission.store
    original = store.insert_intents
    failed: list[bool] = []

    async def flaky(items: list[Any]) -> set[str]:
        if not failed and any(t.client_order_id == client_order_id for t, _ in items):
            failed.append(True)
            await asyncio.sleep(delay_s)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        result: set[str] = await original(items)
        return result

    store.insert_intents = flaky
    return failed


def skipped_by_subscription(db_url: str) -> list[tuple[Any, ...]]:
    """(subscription id, skipped) of every subscription with a skip counted."""
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT subscription_id, skipped FROM subscription_stats WHERE skipped > 0").fetchall()


async def book_fills(harness: Harness, *fills: tuple[Ticket, Booking]) -> None:
    """What the executor books when the venue fills these orders (a shared position's parts)."""
    assert harness.executor is not None
    async with harness.executor.admission.store.pool.connection() as conn, conn.transaction(), \
            conn.cursor() as cur:
        await fill_store.book(cur, list(fills))


def position_split(db_url: str, wallet_id: str) -> dict[str, Decimal]:
    """Each subscription's shares of the wallet's one position, as the executor reads its split."""
    [(size, cost, kept, opener)] = rows(db_url, "SELECT size, cost_usd, subscription_shares, subscription_id"
                                                " FROM positions WHERE follower_wallet_id = %s", wallet_id)
    return {k: p.shares for k, p in ss.split_of(ss.decode(kept), size, cost, opener).items()}


async def resized_end(harness: Harness) -> epb.OrderEvent:
    """The final event of the SELL sent again (``co_rs_…``) after the venue refused one for lack of shares."""
    async def resized() -> epb.OrderEvent | None:
        for e in await harness.all_events():
            if e.client_order_id.startswith("co_rs_") and e.type in TERMINAL_TYPES:
                return e
        return None

    return await eventually(resized, timeout_s=20)
