"""A fill of the other venue than its position's open life is alerted once its booking committed, once: not for a
booking rolled back, not twice when the journal writes it again after a commit that failed, nor when the commit went
through and only its answer was lost. Real PostgreSQL and Redis; the failure is a proxy cutting the connection at the
COMMIT, before the server gets it or after it answered."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common import reservations
from common.alerts import OUTBOX, AlertKind
from common.storage import create_pool
from services.executor.adapters.order_store import Change, OrderStore
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from tests.executor.answer_cut import AnswerCut, answer_cut
from tests.executor.conftest import (
    ASSET,
    filled_change,
    make_order,
    placed_change,
    refused_change,
    rows,
    running_journal,
)

pytestmark = pytest.mark.integration


def _paper_position(db_url: str) -> None:
    """Wallet w_1 holds the token in the PAPER venue (since its INSIDERS order was admitted): an INSIDERS fill of it
    is not booked."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, avg_price, cost_usd, id,"
                     " state, origin, venue) VALUES ('w_1', %s, '0xp', 10, 0.5, 5, 'pos_paper1', 'OPEN', 'COPY',"
                     " 'PAPER')", (ASSET,))


def _not_booked_alerts() -> list[str]:
    """The fill ids of the FILL_NOT_BOOKED alerts raised since the last call."""
    return [a.fields["fill_id"] for a in OUTBOX.take(len(OUTBOX.items)) if a.kind == AlertKind.FILL_NOT_BOOKED]


async def _filled(store: OrderStore, i: int) -> tuple[Prepared, list[Change]]:
    """A live order of w_1 (its intent stored: admission refuses it once w_1 holds the token in PAPER), and the
    changes of its venue accepting it and filling 4 shares."""
    p = prepare(make_order(i, follower_wallet_id="w_1"), None, IntakeRules(live_configured=True), time.time_ns())
    assert p.ticket.venue == "INSIDERS"
    assert await store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
    now = time.time_ns()
    placed, life = placed_change(p.ticket, p.life, now)
    return p, [placed, filled_change(p.ticket, life, "4", now + 1)]


@asynccontextmanager
async def _through_proxy(db_url: str) -> AsyncIterator[tuple[AnswerCut, Any]]:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            yield proxy, pool
        finally:
            await pool.close()


async def test_a_fill_not_booked_by_a_booking_rolled_back_raises_no_alert(db_url: str) -> None:
    async with _through_proxy(db_url) as (proxy, pool):
        store = OrderStore(pool)
        _, changes = await _filled(store, 1)
        _paper_position(db_url)
        _not_booked_alerts()
        proxy.arm(b"COMMIT", after=False)
        with pytest.raises(psycopg.OperationalError):
            await store.apply([], changes)
        assert proxy.cuts == 1
        assert rows(db_url, "SELECT count(*) FROM fills") == [(0,)]
        assert _not_booked_alerts() == []


@pytest.mark.parametrize("with_insert", [False, True], ids=["changes", "changes_and_insert"])
@pytest.mark.parametrize("committed", [False, True], ids=["rolled_back", "answer_lost"])
async def test_a_fill_not_booked_is_alerted_once_when_the_journal_writes_it_again(
        db_url: str, redis_url: str, committed: bool, with_insert: bool) -> None:
    async with answer_cut(db_url) as proxy, running_journal(proxy.url, redis_url, reservations.release_many,
                                                            30.0) as (journal, _r, _sr):
        _, changes = await _filled(journal.store, 1)
        _paper_position(db_url)
        _not_booked_alerts()
        proxy.arm(b"COMMIT", after=committed)
        await journal.write(changes, inserts=[refused_change(2)] if with_insert else None)
        assert proxy.cuts == 1
        assert rows(db_url, "SELECT venue, size FROM fills") == [("INSIDERS", D(4))]  # kept, once
        assert rows(db_url, "SELECT venue, size FROM positions") == [("PAPER", D(10))]  # not booked
        [fill_id] = [c.booking.fill_id for c in changes if c.booking is not None]
        assert _not_booked_alerts() == [fill_id]
