"""An order intent whose INSERT committed but whose answer was lost (the connection dropped after the server wrote
it) is the new order it is: the retry that finds the row starts it as new (posted at once, no restart's status query
first, no duplicate counted), as the first answer would have; an intent stored by an earlier admission of the same
order is still known, not new. Real PostgreSQL, Redis and the Insiders fake; the drop is a proxy's cut."""

from __future__ import annotations

import time

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.app import start
from services.executor.config import Settings
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from tests.executor.answer_cut import answer_cut
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]


async def test_a_routed_order_whose_intent_answer_was_lost_starts_as_new(harness: Harness, db_url: str) -> None:
    await harness.set_book(ASSET, BIDS, ASKS)
    async with answer_cut(db_url) as proxy:
        running = await start(Settings.from_env(harness.env()), proxy.url, harness.redis_url)
        try:
            order = make_order(42)
            proxy.arm(order.client_order_id.encode(), after=True)  # its intent INSERT commits, unanswered
            await harness.route(order)
            await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=15,
                             message="the order never ended")
            assert proxy.cuts == 1
            kinds = [e.type for e in await harness.events_of(order.client_order_id)]
            assert kinds == [epb.ORDER_EVENT_TYPE_PLACED, epb.ORDER_EVENT_TYPE_FILLED]  # no restart's UNKNOWN first
            assert rows(db_url, "SELECT post_uncertain, attempts FROM orders") == [(False, 1)]
            assert len(harness.fake.posts_for(order.client_order_id)) == 1
            assert (running.admission.admitted, running.admission.duplicates) == (1, 0)
        finally:
            await running.stop(0)


async def test_an_intent_stored_by_an_earlier_admission_stays_known_after_a_lost_answer(db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            first = _admitted(7)
            assert await store.insert_intents([(first.ticket, first.life)]) == {first.ticket.client_order_id}
            again = _admitted(7)  # the same order handed in again, its insert's answer lost
            proxy.arm(again.ticket.client_order_id.encode(), after=True)
            with pytest.raises(psycopg.OperationalError):
                await store.insert_intents([(again.ticket, again.life)])
            assert proxy.cuts == 1
            assert await store.insert_intents([(again.ticket, again.life)]) == set()
        finally:
            await pool.close()


def _admitted(i: int) -> Prepared:
    """An order prepared as admission does: its own arrival."""
    p = prepare(make_order(i), None, IntakeRules(live_configured=True), time.time_ns())
    p.ticket.arrival_ns = time.time_ns()
    return p
