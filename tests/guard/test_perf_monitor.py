"""Performance rules through guard's loop on real PostgreSQL and Redis: loss-stop, resume, profit-scale."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from common.ids import new_id
from common.marketstate import BookSnapshot, write_book
from services.guard.domain import perf_rules
from tests.guard.conftest import GuardFactory
from tests.guard.standins import ASSET, CONDITION, WALLET_ID, StandIns, db, insert_subscription
from tests.helpers import INTERNAL_TOKEN, eventually
from tradingtools.control.v1 import control_pb2 as ctl

pytestmark = pytest.mark.integration


async def _fill_row(conn: Any, sub_id: str, side: str, size: str, price: str) -> None:
    await conn.execute(
        "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, condition_id, side, size,"
        " price, notional_usd, venue, fill_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'PAPER', now())",
        (new_id("fill"), sub_id, WALLET_ID, new_id("co"), ASSET, CONDITION, side, Decimal(size), Decimal(price),
         Decimal(size) * Decimal(price)))


async def _book(redis: Any, bid: str, ask: str) -> None:
    """A fresh REST snapshot (taken now): the perf rules trust only fresh books."""
    await write_book(redis, BookSnapshot(ASSET, CONDITION, ((Decimal(bid), Decimal(100)),),
                                         ((Decimal(ask), Decimal(100)),), Decimal("0.01"), 0,
                                         time.time_ns() // 1_000_000))


async def _losing_subscription(db_url: str, redis: Any) -> Any:
    """``sub_loss`` (lossStopUsd 400) at PnL -400: realized -150, 500 shares of cost 300 marked at 0.10 (-250).
    Returns a connection for the test."""
    conn = await db(db_url)
    await insert_subscription(conn, "sub_loss", perf={"lossStopUsd": "400"})
    await _fill_row(conn, "sub_loss", "BUY", "1000", "0.60")
    await _fill_row(conn, "sub_loss", "SELL", "500", "0.30")  # realized -150
    await _book(redis, "0.09", "0.11")  # mark 0.10: unrealized 500 x 0.1 - 300 = -250 → -400 total
    return conn


async def test_loss_stop_pauses_the_subscription_once(db_url: str, redis: Any, standins: StandIns,
                                                      make_guard: GuardFactory) -> None:
    conn = await _losing_subscription(db_url, redis)
    await insert_subscription(conn, "sub_fine", perf={"lossStopUsd": "400"}, leader="0x" + "1" * 40)
    await _fill_row(conn, "sub_fine", "BUY", "1000", "0.10")
    running = await make_guard()
    calls = standins.control.calls
    await eventually(lambda: len(calls) == 1)
    call = calls[0]
    assert call.authorization == f"Bearer {INTERNAL_TOKEN}"  # the internal token, never the backend's
    assert (call.request.id, call.request.action) == ("sub_loss", ctl.PERF_ACTION_PAUSE)
    assert call.request.decision_id == perf_rules.loss_stop_id("sub_loss", 0)
    assert "LOSS_STOP" in call.request.reason

    async def recorded() -> dict[str, Any] | None:
        row = await (await conn.execute("SELECT * FROM guard_perf_decisions WHERE subscription_id = 'sub_loss'")
                     ).fetchone()
        return dict(row) if row and row["applied_at"] is not None else None

    row = await eventually(recorded)
    assert (row["action"], row["realized_pnl_usd"], row["unrealized_pnl_usd"], row["pnl_usd"],
            row["threshold_usd"], row["applied"]) == ("PAUSE", Decimal(-150), Decimal(-250), Decimal(-400),
                                                      Decimal(400), True)
    state = await (await conn.execute("SELECT state FROM subscriptions WHERE id = 'sub_loss'")).fetchone()
    assert state is not None and state["state"] == "PAUSED"
    evaluations = running.perf.stats.evaluations
    await eventually(lambda: running.perf.stats.evaluations >= evaluations + 3)
    assert len(calls) == 1  # a paused subscription is not evaluated again; sub_fine never crossed
    await conn.close()


async def test_profit_scale_scales_once_and_survives_a_restart(db_url: str, redis: Any, standins: StandIns,
                                                               make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_win", perf={"profitScaleAtUsd": "100", "profitScaleMultiplier": "1.5"})
    await _fill_row(conn, "sub_win", "BUY", "1000", "0.20")
    await _book(redis, "0.30", "0.32")  # mark 0.31: unrealized +110
    running = await make_guard()
    calls = standins.control.calls
    await eventually(lambda: len(calls) == 1)
    assert (calls[0].request.action, calls[0].request.multiplier) == (ctl.PERF_ACTION_SCALE, "1.5")
    evaluations = running.perf.stats.evaluations
    await eventually(lambda: running.perf.stats.evaluations >= evaluations + 3)
    assert len(calls) == 1  # once
    await running.stop()
    # a decision recorded but not acknowledged (crash before control answered) is re-sent with the same id
    await conn.execute("UPDATE guard_perf_decisions SET applied_at = NULL")
    running = await make_guard()
    await eventually(lambda: len(calls) == 2)
    assert calls[1].request.decision_id == calls[0].request.decision_id
    sub = await (await conn.execute("SELECT applied_multiplier FROM subscriptions WHERE id = 'sub_win'")).fetchone()
    assert sub is not None and sub["applied_multiplier"] == Decimal("1.5")  # applied once
    evaluations = running.perf.stats.evaluations
    await eventually(lambda: running.perf.stats.evaluations >= evaluations + 3)
    assert len(calls) == 2
    await conn.close()


async def test_a_resumed_loss_stop_counts_from_the_pnl_it_was_resumed_at(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    """A user who resumes a loss-stopped subscription accepts the loss so far: it is not paused again at once
    by that same loss, only after losing ``lossStopUsd`` more."""
    conn = await _losing_subscription(db_url, redis)
    running = await make_guard()
    calls = standins.control.calls
    await eventually(lambda: len(calls) == 1)

    async def paused() -> bool:  # control has answered: the subscription is PAUSED and the decision applied
        row = await (await conn.execute("SELECT applied_at FROM guard_perf_decisions WHERE subscription_id = 'sub_loss'"
                                        " AND action = 'PAUSE'")).fetchone()
        return row is not None and row["applied_at"] is not None
    await eventually(paused)
    await conn.execute("UPDATE subscriptions SET state = 'ACTIVE' WHERE id = 'sub_loss'")  # the user resumes it
    await eventually(lambda: running.perf.stats.resumes == 1)
    evaluations = running.perf.stats.evaluations
    await eventually(lambda: running.perf.stats.evaluations >= evaluations + 3)
    assert len(calls) == 1  # still -400: not paused again
    rows = await (await conn.execute(
        "SELECT action, pnl_usd, applied FROM guard_perf_decisions WHERE subscription_id = 'sub_loss'"
        " ORDER BY seq")).fetchall()
    assert [(r["action"], r["pnl_usd"], r["applied"]) for r in rows] == [("PAUSE", Decimal(-400), True),
                                                                          ("RESUMED", Decimal(-400), True)]
    # 1,000 more shares at 0.50 marked at 0.10: -400 more, -800 in all → the second loss-stop
    await _fill_row(conn, "sub_loss", "BUY", "1000", "0.50")
    await eventually(lambda: len(calls) == 2)
    assert (calls[1].request.action, calls[1].request.decision_id) == (ctl.PERF_ACTION_PAUSE,
                                                                         perf_rules.loss_stop_id("sub_loss", 1))
    assert "when resumed" in calls[1].request.reason
    assert running.perf.stats.resumes == 1
    await conn.close()
