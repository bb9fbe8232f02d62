"""The read that tells whether a lost insert wrote an order's row can lose its connection too: the arrivals of the lost
inserts are kept for the next ticket of the order that comes back (a new one, of the routed trade handed in again),
which then starts the order as new. Real PostgreSQL; the drops are a proxy's cuts."""

from __future__ import annotations

import psycopg
import pytest

from common.storage import create_pool
from services.executor.adapters.order_store import OrderStore
from tests.executor.answer_cut import answer_cut
from tests.executor.test_intent_retried_by_new_ticket import _admitted, _lose_answer

pytestmark = pytest.mark.integration


async def test_an_order_whose_lost_insert_is_looked_for_in_vain_is_inserted_now_for_the_next_new_ticket(
        db_url: str) -> None:
    async with answer_cut(db_url) as proxy:
        pool = await create_pool(proxy.url, min_size=1, max_size=2, autocommit=True)
        try:
            store = OrderStore(pool)
            lost = _admitted(15)
            await _lose_answer(proxy, store, lost)
            proxy.arm(b"w(coid, arr)", after=False)  # a new ticket comes back; the look for the lost insert is cut
            cut = _admitted(15)
            with pytest.raises(psycopg.OperationalError):
                await store.insert_intents([(cut.ticket, cut.life)])
            assert proxy.cuts == 2
            again = _admitted(15)  # the trade handed in once more, with new tickets
            assert await store.insert_intents([(again.ticket, again.life)]) == {again.ticket.client_order_id}
            assert await store.insert_intents([(_admitted(15).ticket, _admitted(15).life)]) == set()  # once
        finally:
            await pool.close()
