"""An order intent whose INSERT committed with its answer lost, and that admission gave up retrying, is the new order it
is when its routed trade is handed in again with new tickets (a new arrival): the first of them to come back starts
it (posted at once, no restart's status query first), only one, and only while nothing has touched its row since its
insert. Real PostgreSQL, Redis and the Insiders fake; the drop is a proxy's cut."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.app import start
from services.executor.config import Settings
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from tests.executor.answer_cut import AnswerCut, answer_cut
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]


async def test_a_routed_order_handed_in_again_after_its_lost_insert_gave_up_starts_as_new(
        harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    async with answer_cut(db_url) as proxy:
        running = await start(Settings.from_env(harness.env()), proxy.url, harness.redis_url)
        try:
            running.admission.intent_retry_s = 0.0  # the insert's retries give up at once: the trade comes again
            order = make_order(43)
            proxy.arm(order.client_order_id.encode(), after=True)  # its intent INSERT commits, unanswered
            await harness.route(order)
            await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=15,
                             message="the order never ended")
            assert proxy.cuts == 1
            kinds = [e.type for e in await harness.events_of(order.client_order_id)]
            assert kinds == [epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]  # no restart's UNKNOWN first
            assert rows(db_url, "SELECT post_uncertain FROM orders") == [(False,)]
            assert len(harness.fake.posts_for(order.client_order_id)) == 1
            assert (running.admission.admitted, running.admission.duplicates) == (1, 0)
        finally:
            await running.stop(0)


async def test_an_order_whose_lost_insert_wrote_its_row_is_inserted_now_for_one_new_ticket_only(db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=4, autocommit=True)
        try:
            store = OrderStore(pool)
            lost = _admitted(8)
            await _lose_answer(proxy, store, lost)
            again, also = _admitted(8), _admitted(8)  # handed in again twice, side by side, each with its arrival
            got = await asyncio.gather(store.insert_intents([(again.ticket, again.life)]),
                                       store.insert_intents([(also.ticket, also.life)]))
            assert sorted(len(g) for g in got) == [0, 1]
            assert await store.insert_intents([(_admitted(8).ticket, _admitted(8).life)]) == set()
        finally:
            await pool.close()


async def test_an_order_written_since_its_lost_insert_stays_known(db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            lost = _admitted(9)
            await _lose_answer(proxy, store, lost)
            await store.restamp(lost.ticket.client_order_id)  # something took the order up meanwhile
            again = _admitted(9)
            assert await store.insert_intents([(again.ticket, again.life)]) == set()
        finally:
            await pool.close()


async def _lose_answer(proxy: AnswerCut, store: OrderStore, p: Prepared) -> None:
    """Insert ``p``'s intent; the insert commits and its answer is lost."""
    proxy.arm(p.ticket.client_order_id.encode(), after=True)
    with pytest.raises(psycopg.OperationalError):
        await store.insert_intents([(p.ticket, p.life)])
    assert proxy.cuts == 1


def _admitted(i: int) -> Prepared:
    """An order prepared as admission does: its own arrival."""
    p = prepare(make_order(i), None, IntakeRules(live_configured=True), time.time_ns())
    p.ticket.arrival_ns = time.time_ns()
    return p
