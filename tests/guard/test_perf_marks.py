"""Perf rules end to end on marks they can trust: a profit-scale and a resume point wait while a held asset has no
mark or a book that is not fresh; a loss-stop still fires, never counting an untrusted gain."""

from __future__ import annotations

import time
from typing import Any

import pytest

from common.marketstate import BOOK_FEED_KEY, FeedBeat, book_key
from tests.guard.perf_support import A1, A2, AUTH, SCALE_X2, add_fill, create, get, put_book
from tests.guard.standins import db
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration


async def _beat(rds: Any, session: str) -> None:
    await rds.set(BOOK_FEED_KEY, FeedBeat(session, time.time_ns() // 1_000_000).to_json())


async def test_a_profit_scale_waits_for_a_mark_of_every_held_asset(db_url: str, stubs: Any, make_monitor: Any,
                                                                   rds: Any) -> None:
    sub = await create(stubs, SCALE_X2)
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")
    await put_book(rds, A1, "0.34", "0.36")  # +150; A2 ($500 at cost): no book
    monitor = make_monitor()
    for _ in range(2):
        await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "1"
    assert monitor.stats.mark_waits == 2 and monitor.stats.decisions == 0
    await put_book(rds, A2, "0.49", "0.51")  # A2 at cost: +150 on trusted marks
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "2"
    await conn.close()


@pytest.mark.parametrize("feed_session", ["s_live", None])  # another session alive, or none
async def test_a_profit_scale_trusts_no_book_of_a_feed_session_that_is_over(
        db_url: str, stubs: Any, make_monitor: Any, rds: Any, feed_session: str | None) -> None:
    sub = await create(stubs, SCALE_X2)
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.2")
    await put_book(rds, A1, "0.34", "0.36", session="s_dead")  # +150 on a frozen book
    if feed_session is not None:
        await _beat(rds, feed_session)
    monitor = make_monitor()
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "1"
    await put_book(rds, A1, "0.34", "0.36", session="s_live")  # the live session confirms it
    await _beat(rds, "s_live")
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).perf.applied_multiplier == "2"
    await conn.close()


async def test_a_resume_point_waits_for_trusted_marks(db_url: str, stubs: Any, make_monitor: Any, rds: Any) -> None:
    """Paused at -400 (realized -150, unrealized -250) and resumed: a pass without the book neither takes the
    resume point (it would be -150) nor pauses again; the point is taken at -400 once the book is back."""
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.6")
    await add_fill(conn, sub.id, A1, "SELL", "500", "0.3")  # realized -150
    await put_book(rds, A1, "0.09", "0.11")  # 500 x 0.10 - 300 = -250
    monitor = make_monitor()
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_PAUSED
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    await rds.delete(book_key(A1))
    await monitor.evaluate_all()
    assert (monitor.stats.resumes, monitor.stats.mark_waits) == (0, 1)
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_ACTIVE
    await put_book(rds, A1, "0.09", "0.11")
    await monitor.evaluate_all()
    row = await (await conn.execute("SELECT pnl_usd FROM guard_perf_decisions WHERE action = 'RESUMED'")).fetchone()
    assert row is not None and row["pnl_usd"] == -400
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.3")  # -600: $200 below the resume point
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_ACTIVE
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.3")  # -800: $400 below it
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_PAUSED
    await conn.close()


@pytest.mark.parametrize(("book", "session"), [
    (None, ""),  # the held asset has no book
    (("0.69", "0.71"), "s_dead"),  # its book (a +$200 gain) is of a feed session that is over
])
async def test_a_loss_stop_fires_on_the_loss_it_can_trust(db_url: str, stubs: Any, make_monitor: Any, rds: Any,
                                                          book: tuple[str, str] | None, session: str) -> None:
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.6")
    await add_fill(conn, sub.id, A1, "SELL", "1000", "0.15")  # realized -450
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")  # held, $500 at cost
    if book is not None:
        await put_book(rds, A2, *book, session=session)
        await _beat(rds, "s_live")
    await make_monitor().evaluate_all()
    got = await get(stubs, sub.id)
    assert got.state == spb.SUBSCRIPTION_STATE_PAUSED
    assert got.paused_reason.startswith("LOSS_STOP: pnl -450") and "marks incomplete" in got.paused_reason
    await conn.close()


async def test_losses_made_while_the_resume_baseline_waits_are_not_forgiven(
        db_url: str, stubs: Any, make_monitor: Any, rds: Any) -> None:
    """Resumed at -400 with a held book gone: $300 is lost (realized) while the baseline waits for trusted marks.
    Taken at -700 when the book is back, the next loss-stop would come at -1100: it stays at -800."""
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.6")
    await add_fill(conn, sub.id, A1, "SELL", "500", "0.3")  # realized -150
    await put_book(rds, A1, "0.09", "0.11")  # unrealized -250: pnl -400, the loss-stop
    monitor = make_monitor()
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_PAUSED
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    await rds.delete(book_key(A1))  # the book is gone for a while: the baseline waits
    await monitor.evaluate_all()
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.2")  # realized -300 since the resume
    await monitor.evaluate_all()
    await put_book(rds, A1, "0.09", "0.11")  # the book is back: pnl -700
    await monitor.evaluate_all()
    [row] = await (await conn.execute(
        "SELECT pnl_usd FROM guard_perf_decisions WHERE action = 'RESUMED'")).fetchall()
    assert row["pnl_usd"] == -400
    await add_fill(conn, sub.id, A2, "BUY", "1000", "0.5")
    await add_fill(conn, sub.id, A2, "SELL", "1000", "0.15")  # pnl -1050: below -800
    await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_PAUSED
    await conn.close()
