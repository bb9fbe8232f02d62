"""An order whose intent insert lost its answer is started as new by the first ticket of it that comes back only while
its row is as that insert wrote it. A SELL sent with a fraction is sized in its turn (``OrderStore.set_size``): that
write, like any other since the insert, means the order was taken up, and it stays known (resumed, never started a
second time). Real PostgreSQL; the drop is a proxy's cut."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from services.executor.domain.order_intake import IntakeRules, Prepared, prepare
from tests.executor.answer_cut import answer_cut
from tests.executor.conftest import rows
from tests.executor.flip import sell_order
from tests.executor.test_intent_retried_by_new_ticket import _admitted, _lose_answer

pytestmark = pytest.mark.integration


def _fraction_sell(i: int) -> Prepared:
    """A SELL of half the position, prepared as admission does: its own arrival, sized later."""
    p = prepare(sell_order(i, "0.5"), None, IntakeRules(live_configured=True), time.time_ns())
    p.ticket.arrival_ns = time.time_ns()
    return p


async def test_a_sell_sized_since_its_lost_insert_stays_known(db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            lost = _fraction_sell(11)
            coid = lost.ticket.client_order_id
            await _lose_answer(proxy, store, lost)
            await store.set_size(coid, Decimal("5"), Decimal("0.49"), lost.ticket.order.SerializeToString())
            assert rows(db_url, "SELECT state, size FROM orders") == [("NEW", Decimal("5"))]  # sized in its turn
            again = _fraction_sell(11)
            assert await store.insert_intents([(again.ticket, again.life)]) == set()
        finally:
            await pool.close()


async def test_a_row_untouched_since_its_lost_insert_is_inserted_now_for_the_ticket_that_comes_back(
        db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            for p in (_fraction_sell(12), _admitted(13)):
                await _lose_answer(proxy, store, p)
                proxy.cuts = 0
            again = [_fraction_sell(12), _admitted(13)]
            assert await store.insert_intents([(p.ticket, p.life) for p in again]) == {
                p.ticket.client_order_id for p in again}
        finally:
            await pool.close()
