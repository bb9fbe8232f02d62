"""A journal batch whose COMMIT went through but whose answer was lost (the connection dropped at the commit) is
retried: the retry books nothing again and doubles no event, and the journal still does what the commit asks for
afterwards: the watch set follows the position the fill opened, and a refused order inserted by the lost commit is
reported, published and observed as new. Real PostgreSQL and Redis; the lost answer is the store's to drop."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal as D
from typing import Any

import psycopg
import pytest

from common import reservations
from common.marketstate import WATCH_POSITIONS
from common.streams import ORDER_EVENTS
from services.executor.adapters.order_store import Change, OrderStore
from services.executor.domain.fill_math import Booked
from services.executor.domain.order_intake import IntakeRules, prepare
from tests.executor.conftest import filled_change, make_order, placed_change, refused_change, rows, running_journal
from tests.helpers import eventually

pytestmark = pytest.mark.integration


class AnswerLost(OrderStore):
    """Commits the next ``lost`` applies, then raises as a connection dropped before the COMMIT's answer."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lost = 0

    async def apply(self, inserts: list[Change], changes: list[Change]) -> tuple[set[str], list[Booked]]:
        result = await super().apply(inserts, changes)
        if self.lost > 0:
            self.lost -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return result


def _store(journal: Any) -> AnswerLost:
    store = journal.store
    assert isinstance(store, AnswerLost)
    return store


async def test_a_fill_whose_commit_answer_was_lost_is_booked_once_and_its_position_watched(
        db_url: str, redis_url: str) -> None:
    async with running_journal(db_url, redis_url, reservations.release_many, 0.1, store=AnswerLost,
                               watch_repair_interval_s=3600.0) as (journal, r, sr):
        await eventually(lambda: journal.stats.watch_repairs >= 1)  # the start-up repair is done
        now = time.time_ns()
        p = prepare(make_order(1, asset_id="tok_lost_answer"), None, IntakeRules(live_configured=True), now)
        assert await journal.store.insert_intents([(p.ticket, p.life)]) == {p.ticket.client_order_id}
        placed, life = placed_change(p.ticket, p.life, now)
        _store(journal).lost = 1
        await journal.write([placed, filled_change(p.ticket, life, "10", now + 1)])
        assert rows(db_url, "SELECT size FROM positions WHERE asset_id = 'tok_lost_answer'") == [(D("10"),)]
        assert rows(db_url, "SELECT count(*) FROM order_events") == [(2,)]
        await eventually(lambda: r.sismember(WATCH_POSITIONS, "tok_lost_answer"), timeout_s=3,
                         message="the opened position's asset is not watched")
        await eventually(lambda: _appended(sr, 2), timeout_s=3)
        await asyncio.sleep(0.3)  # three sweeps: none appends them again
        assert await _appended(sr, 2)


async def test_a_refused_order_inserted_by_a_commit_whose_answer_was_lost_is_reported_new_and_published_at_once(
        db_url: str, redis_url: str) -> None:
    seen: list[str] = []
    async with running_journal(db_url, redis_url, reservations.release_many, 30.0, store=AnswerLost,
                               observe=lambda cs: seen.extend(c.life.client_order_id for c in cs)) as (
            journal, _r, sr):
        _store(journal).lost = 1
        assert await journal.write([], inserts=[refused_change(1)]) == {"co_test00001"}
        assert rows(db_url, "SELECT count(*) FROM order_events") == [(1,)]
        assert seen == ["co_test00001"]  # metrics of its end are counted
        await eventually(lambda: _appended(sr, 1), timeout_s=3, message="its REJECTED waits for a sweep")
        # a replay of the same refusal (another process, a restart) finds it there: not new
        assert await journal.write([], inserts=[refused_change(1)]) == set()


async def _appended(sr: Any, n: int) -> bool:
    return int(await sr.xlen(ORDER_EVENTS)) == n
