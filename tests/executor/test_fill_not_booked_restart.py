"""A fill not booked by a booking whose commit's answer was lost is alerted after a restart too, once: the process
that lost the answer stops before a later booking of the same fills tells whether it committed, and the next one
reports it from what is stored. A booking rolled back leaves nothing to report; one whose fills were alerted at
once is not alerted again. Real PostgreSQL and Redis; the failure is a proxy cutting the connection at the COMMIT."""

from __future__ import annotations

import time

import psycopg
import pytest

from common.alerts import AlertKind
from common.storage import create_pool
from services.executor.adapters.order_store import Change, OrderStore
from services.executor.domain.order_intake import IntakeRules, prepare
from tests.executor.answer_cut import answer_cut
from tests.executor.conftest import Harness, filled_change, make_order, placed_change, rows
from tests.executor.test_fill_not_booked_once import _not_booked_alerts, _paper_position
from tests.helpers import alerts_raised, eventually

pytestmark = pytest.mark.integration


async def _filled(store: OrderStore, i: int) -> tuple[str, list[Change]]:
    """A live order of w_1 (its intent stored), and the changes of its venue accepting it and filling 4 shares."""
    p = prepare(make_order(i, follower_wallet_id="w_1"), None, IntakeRules(live_configured=True), time.time_ns())
    assert await store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
    now = time.time_ns()
    placed, life = placed_change(p.ticket, p.life, now)
    filled = filled_change(p.ticket, life, "4", now + 1)
    assert filled.booking is not None
    return filled.booking.fill_id, [placed, filled]


async def _booked_and_stopped(db_url: str, *, committed: bool) -> str:
    """A process books a fill not booked, loses its COMMIT (before the server gets it, or its answer after it
    committed) and stops: the fill's id."""
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            fill_id, changes = await _filled(store, 1)
            _paper_position(db_url)
            _not_booked_alerts()
            proxy.arm(b"COMMIT", after=committed)
            with pytest.raises(psycopg.OperationalError):
                await store.apply([], changes)
            assert proxy.cuts == 1
            assert _not_booked_alerts() == []  # not known yet whether it committed
        finally:
            await pool.close()
    return fill_id


async def test_a_fill_not_booked_whose_commit_answer_was_lost_is_alerted_after_a_restart(harness: Harness) -> None:
    fill_id = await _booked_and_stopped(harness.db_url, committed=True)
    assert rows(harness.db_url, "SELECT id, venue FROM fills") == [(fill_id, "INSIDERS")]
    await harness.start_executor()

    def alerted() -> list[str]:
        return [a.fields["fill_id"] for a in alerts_raised(harness.redis_url, AlertKind.FILL_NOT_BOOKED)]

    assert await eventually(alerted, timeout_s=10) == [fill_id]


async def test_a_fill_not_booked_is_alerted_once_across_restarts(db_url: str) -> None:
    fill_id = await _booked_and_stopped(db_url, committed=True)
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        await OrderStore(pool).unbooked.sweep()  # the next process's start
        assert _not_booked_alerts() == [fill_id]
        await OrderStore(pool).unbooked.sweep()  # and the one after it
        assert _not_booked_alerts() == []
    finally:
        await pool.close()


async def test_a_fill_of_a_booking_rolled_back_is_not_alerted_after_a_restart(db_url: str) -> None:
    await _booked_and_stopped(db_url, committed=False)
    assert rows(db_url, "SELECT count(*) FROM fills") == [(0,)]
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        await OrderStore(pool).unbooked.sweep()
        assert _not_booked_alerts() == []
    finally:
        await pool.close()


async def test_a_fill_not_booked_alerted_when_its_booking_committed_is_not_alerted_again_after_a_restart(
        db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2, autocommit=True)
    try:
        store = OrderStore(pool)
        fill_id, changes = await _filled(store, 1)
        _paper_position(db_url)
        _not_booked_alerts()
        await store.apply([], changes)
        assert _not_booked_alerts() == [fill_id]
        await OrderStore(pool).unbooked.sweep()
        assert _not_booked_alerts() == []
    finally:
        await pool.close()


async def test_a_fill_not_booked_whose_report_failed_after_its_commit_is_reported_by_the_next_sweep(
        db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            fill_id, changes = await _filled(store, 1)
            _paper_position(db_url)
            _not_booked_alerts()
            proxy.arm(b"FROM fills_not_booked", after=False)  # the booking commits; reading its note fails
            await store.apply([], changes)
            assert proxy.cuts == 1
            assert _not_booked_alerts() == []
            await store.unbooked.sweep(min_age_s=0)
            assert _not_booked_alerts() == [fill_id]
        finally:
            await pool.close()
