"""The daily loss limit stops copied BUYs for the rest of the UTC day once the wallet's realized PnL of the day went
down to −limit: a gain realized later the same day does not start them again. The executor keeps the lowest point
of each wallet's realized PnL of the day as it books; the router reads it. Real PostgreSQL on both sides."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from common.reservations import NOTHING_RESERVED
from services.executor.adapters.fill_store import book
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket
from services.router.adapters.store import PgBatch, RouterStore
from services.router.adapters.store_sql import LOAD, PLANNER_OPTIONS
from services.router.domain.decide import decide
from services.router.domain.model import Decision, Reason, RiskRules, Skip
from services.router.domain.positions import utc_day_start_ms
from services.router.read_model import follower_state
from tests.helpers import plan_nodes
from tests.router.factories import follower, market, policy, trade
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration

D = Decimal
BUY, SELL = cpb.SIDE_BUY, cpb.SIDE_SELL
_n = iter(range(1, 1_000_000))


def _fill(asset: str, side: int, size: str, price: str) -> tuple[Ticket, Booking]:
    n = next(_n)
    order = epb.Order(client_order_id=f"co_{n}", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_1",
                      follower_wallet_id="w_1", follower_proxy="0xproxy", asset_id=asset, condition_id="0xc" + asset,
                      side=side)  # type: ignore[arg-type]
    return (Ticket(order, "PAPER", None, 0),
            Booking(f"f_{n}", D(size), D(price), D(size) * D(price), D(0), True, int(time.time() * 1000)))


async def _book(db_url: str, *fills: tuple[Ticket, Booking]) -> None:
    """One booking (one transaction), as the executor's journal makes it."""
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn, conn.transaction():
        await book(conn.cursor(), list(fills))


async def _load(store: RouterStore, now_ms: int) -> PgBatch:
    return await store.load_batch(leader_trade_ids=["lt_x"], wallets=["w_1"], markets=["0xca3"], assets=["a3"],
                                  leader_assets=[], pnl_day_ms=utc_day_start_ms(now_ms), funding_wallets=[])


async def _realized(store: RouterStore) -> dict[str, Decimal]:
    """What the router reads for the daily loss limit, by wallet."""
    return (await _load(store, time.time_ns() // 1_000_000)).realized_today


async def _next_buy(store: RouterStore) -> Decision:
    """The decision for a copied $25 BUY of a3 by w_1, whose daily loss limit is $300."""
    now_ms = time.time_ns() // 1_000_000
    b = await _load(store, now_ms)
    st = follower_state(b.position("w_1", "0xca3", "a3"), NOTHING_RESERVED, b.realized_today.get("w_1", D(0)), None)
    return decide(trade(asset_id="a3", condition_id="0xca3", venue_time_ms=now_ms - 1000),
                  follower(risk=RiskRules(daily_loss_limit_usd=D("300"))), market(), st, D(0), policy(now_ms=now_ms))


def _stopped(d: Decision) -> bool:
    return isinstance(d, Skip) and d.reason is Reason.DAILY_LOSS_LIMIT


async def test_buys_stay_stopped_for_the_day_once_realized_loss_reached_the_limit(store: RouterStore,
                                                                                  db_url: str) -> None:
    await _book(db_url, _fill("a1", BUY, "1000", "0.5"), _fill("a2", BUY, "100", "0.5"))
    assert not _stopped(await _next_buy(store))
    await _book(db_url, _fill("a1", SELL, "1000", "0.2"))  # -300: the limit is reached
    assert _stopped(await _next_buy(store))
    await _book(db_url, _fill("a2", SELL, "100", "0.99"))  # +49 later the same day: the day's net is -251
    d = await _next_buy(store)
    assert _stopped(d), (await _realized(store), d)
    assert await _realized(store) == {"w_1": D("-300")}  # the lowest the day went


async def test_a_loss_then_a_gain_booked_together_still_stop_buys(store: RouterStore, db_url: str) -> None:
    await _book(db_url, _fill("a1", BUY, "1000", "0.5"), _fill("a2", BUY, "100", "0.5"))
    await _book(db_url, _fill("a1", SELL, "1000", "0.2"), _fill("a2", SELL, "100", "0.99"))  # -300, then +49
    assert _stopped(await _next_buy(store))
    assert await _realized(store) == {"w_1": D("-300")}


async def test_a_gain_before_the_loss_counts(store: RouterStore, db_url: str) -> None:
    """The limit is on the day's net going down to −limit: a gain booked earlier offsets a later loss."""
    await _book(db_url, _fill("a1", BUY, "1000", "0.5"), _fill("a2", BUY, "100", "0.5"))
    await _book(db_url, _fill("a2", SELL, "100", "0.99"))  # +49
    await _book(db_url, _fill("a1", SELL, "1000", "0.2"))  # -300: the day's net is -251 at its lowest
    assert not _stopped(await _next_buy(store))
    assert await _realized(store) == {"w_1": D("-251")}


async def test_the_stop_ends_with_the_utc_day(store: RouterStore, db_url: str) -> None:
    await _book(db_url, _fill("a1", BUY, "1000", "0.5"), _fill("a2", BUY, "100", "0.5"))
    await _book(db_url, _fill("a1", SELL, "500", "0.2"))  # -150
    await _book(db_url, _fill("a1", SELL, "500", "0.2"), _fill("a2", SELL, "50", "0.99"))  # -150, +24.5
    assert _stopped(await _next_buy(store))
    with psycopg.connect(db_url) as conn:
        # a booking counts in the UTC day of its transaction, the day its positions' pnl_day names
        days = conn.execute("SELECT pnl_day FROM positions UNION SELECT day FROM wallet_day_pnl"
                            " UNION SELECT (now() AT TIME ZONE 'UTC')::date").fetchall()
        assert len(days) == 1, days
        # as if all of that had been booked yesterday
        conn.execute("UPDATE positions SET pnl_day = pnl_day - 1")
        conn.execute("UPDATE wallet_day_pnl SET day = day - 1")
    assert await _realized(store) == {}
    assert not _stopped(await _next_buy(store))
    await _book(db_url, _fill("a2", SELL, "50", "0.30"))  # -10 today: the new day starts from zero
    assert await _realized(store) == {"w_1": D("-10")}
    assert not _stopped(await _next_buy(store))


class _Captured(Exception):
    """LOAD's parameters were captured."""


async def test_the_load_reads_the_wallets_day_by_its_key(db_url: str) -> None:
    """LOAD, the hot statement of every copy, probes the wallet's day row by its key in the plan the router's
    connection caches (generic, no sequential scans)."""
    got: dict[str, Any] = {}

    async def capture(sql: str, params: dict[str, Any]) -> tuple[Any, ...]:
        got.update(params)
        raise _Captured

    probe = RouterStore(None)  # type: ignore[arg-type]
    probe._hot_one = capture  # type: ignore[method-assign]
    with pytest.raises(_Captured):
        await probe.load_batch(leader_trade_ids=["lt_x"], wallets=["w_1", "w_2"], markets=["0xca3"], assets=["a3"],
                               leader_assets=[], pnl_day_ms=utc_day_start_ms(time.time_ns() // 1_000_000),
                               funding_wallets=[])
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", LOAD)))
    with psycopg.connect(db_url, options=PLANNER_OPTIONS, autocommit=True) as conn:
        conn.execute("PREPARE load_x AS " + re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}",
                                                   LOAD))
        row = conn.execute(pgsql.SQL("EXPLAIN (FORMAT JSON) EXECUTE load_x({})").format(
            pgsql.SQL(", ").join(pgsql.Literal(got[n]) for n in names))).fetchone()
    assert row is not None
    scans = [n for n in plan_nodes(row[0][0]["Plan"]) if n.get("Relation Name") == "wallet_day_pnl"]
    assert scans and {(n["Node Type"], n.get("Index Name")) for n in scans} == {("Index Scan", "wallet_day_pnl_pkey")}
