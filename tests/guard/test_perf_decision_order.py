"""Perf decisions are read in the order guard recorded them, whatever guard's clock said: a clock that goes back
across a restart (an NTP step, a replica on a host whose clock is behind) must not make an old resume point read
as newer than a later loss-stop. Real PostgreSQL, the real control in process, guard's PerfMonitor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from common.storage import MIGRATIONS_DIR, create_pool
from services.guard.adapters.perf_store import PerfStore
from services.guard.domain import perf_rules
from tests.guard.perf_support import A1, AUTH, add_fill, create, decisions, get, put_book
from tests.guard.standins import db
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


class SteppedClock:
    """Guard's wall clock, set by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: int) -> None:
        self.now = T0 + timedelta(seconds=seconds)


async def test_a_second_resume_counts_from_its_own_loss_stop_when_the_clock_went_back(
        db_url: str, stubs: Any, make_monitor: Any, rds: Any) -> None:
    """Paused at -400, resumed (baseline -400), restarted on a clock 60 s behind, paused again at -800 and resumed
    again: the next loss-stop counts from -800, the PnL of this resume. Ordered by guard's clock, the first resume
    (stamped later than the second pause) read as the latest record: the baseline stayed -400 and the subscription
    was paused again at once by the loss the user had just accepted."""
    clock = SteppedClock()
    sub = await create(stubs, spb.Perf(loss_stop_usd="400"))
    conn = await db(db_url)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.6")
    await add_fill(conn, sub.id, A1, "SELL", "500", "0.3")  # realized -150
    await put_book(rds, A1, "0.09", "0.11")  # 500 x 0.10 - 300 = -250: -400 in all
    monitor = make_monitor(clock=clock)
    clock.at(100)
    await monitor.evaluate_all()  # loss-stop 1 at -400
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_PAUSED
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    clock.at(110)
    await monitor.evaluate_all()  # resume point -400
    assert monitor.stats.resumes == 1
    # guard restarts on a host whose clock is behind
    monitor = make_monitor(clock=clock)
    clock.at(50)
    await add_fill(conn, sub.id, A1, "BUY", "1000", "0.5")  # 1,000 more at 0.10: -400 more, -800 in all
    await monitor.evaluate_all()  # loss-stop 2 at -800, 400 below the resume point
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_PAUSED
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    clock.at(60)
    for _ in range(2):
        await monitor.evaluate_all()
    assert (await get(stubs, sub.id)).state == spb.SUBSCRIPTION_STATE_ACTIVE  # not paused again at once
    assert monitor.stats.resumes == 1
    assert [(r.action, Decimal(r.pnl_usd)) for r in await monitor.store.decisions(sub.id)] == [
        ("PAUSE", Decimal(-400)), ("RESUMED", Decimal(-400)), ("PAUSE", Decimal(-800)), ("RESUMED", Decimal(-800))]
    assert [a for a, _, _ in await decisions(conn, sub.id)] == ["PAUSE", "RESUMED", "PAUSE", "RESUMED"]
    await conn.close()


def _decision(sid: str, action: perf_rules.Action) -> perf_rules.Decision:
    pnl = perf_rules.Pnl(Decimal(-400), Decimal(0), {})
    if action is perf_rules.Action.PAUSE:
        return perf_rules.Decision(perf_rules.loss_stop_id(sid, 0), sid, action, None, pnl, Decimal(400), "test")
    return perf_rules.Decision(perf_rules.profit_scale_id(sid, Decimal(100), Decimal(2)), sid, action, Decimal(2), pnl,
                               Decimal(100), "test")


async def test_the_store_reads_decisions_in_the_order_recorded(db_url: str) -> None:
    """``decisions()`` and ``unapplied()`` (the re-sends at start-up) list decisions in the order they were recorded,
    not by the clock guard stamped them with."""
    clock = SteppedClock()
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    store = PerfStore(pool, clock)
    recorded = []
    pause, scale = perf_rules.Action.PAUSE, perf_rules.Action.SCALE
    steps = [(100, "sub_a", pause), (40, "sub_b", scale), (70, "sub_a", scale), (10, "sub_c", pause)]
    for seconds, sid, action in steps:  # stamped out of order: guard's clock went back and forth
        clock.at(seconds)
        d = _decision(sid, action)
        assert await store.record(d)
        recorded.append(d.decision_id)
    clock.at(5)
    await store.record_resumed("resumed_a", "sub_a", perf_rules.Pnl(Decimal(-400), Decimal(0), {}), Decimal(400))
    assert [r.decision_id for r in await store.unapplied()] == recorded
    assert [r.decision_id for r in await store.decisions("sub_a")] == [recorded[0], recorded[2], "resumed_a"]
    await pool.close()


MIGRATION = MIGRATIONS_DIR / "0670_perf_decisions_seq.sql"


def _insert_decision(conn: Any, decision_id: str, decided_at: datetime) -> None:
    conn.execute("INSERT INTO guard_perf_decisions (decision_id, subscription_id, action, realized_pnl_usd,"
                 " unrealized_pnl_usd, pnl_usd, threshold_usd, reason, decided_at)"
                 " VALUES (%s, 'sub_a', 'PAUSE', 0, 0, 0, 0, '', %s)", (decision_id, decided_at))


def test_the_migration_numbers_existing_decisions_in_the_order_they_were_read(db_url: str) -> None:
    """Rows from before ``seq`` are numbered in their (decided_at, decision_id) order; later rows follow them."""
    with psycopg.connect(db_url) as conn:
        conn.execute("ALTER TABLE guard_perf_decisions DROP COLUMN seq")  # the table as it was before 0670
        for did, seconds in [("d_late", 30), ("d_b", 10), ("d_a", 10), ("d_mid", 20)]:
            _insert_decision(conn, did, T0 + timedelta(seconds=seconds))
        conn.execute(MIGRATION.read_bytes())
        _insert_decision(conn, "d_new", T0)  # recorded after, on a clock behind
        conn.execute(MIGRATION.read_bytes())  # again: changes nothing
        numbered = conn.execute("SELECT decision_id, seq FROM guard_perf_decisions ORDER BY seq").fetchall()
    assert numbered == [("d_a", 1), ("d_b", 2), ("d_mid", 3), ("d_late", 4), ("d_new", 5)]
