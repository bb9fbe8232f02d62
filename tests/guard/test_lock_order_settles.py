"""Guard's writes to the FIRED triggers of several SELLs take them in key order, so the settling of a batch of
order events and the mark of SELLs the executor has never deadlock.

The settling ran one statement per event, in the events' order; the mark of SELLs the executor answered
(``UPDATE ... FROM unnest``) took its rows in its plan's order, here the order of the answers. A batch settling t_2,
t_9, then t_1 met a mark that had taken t_1 and waited for t_2, and a mark of t_2, t_9, t_1 a batch that had taken
t_1 (40P01). PostgreSQL aborted the one whose wait had begun first: a mark lost (the SELLs are sent again at the next
start, the executor answering with the order it has) or a batch of order events left to the order-event stream to
bring again. A third transaction holding t_9 holds the first at the chosen point.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from collections.abc import Coroutine
from decimal import Decimal as D
from typing import Any

import pytest

from services.guard.adapters.trigger_store import TriggerStore
from tests.executor.conftest import rows
from tests.guard.standins import db, insert_trigger, set_position
from tests.guard.test_lock_order_triggers import store
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration
__all__ = ["store"]  # the fixture, on a pool planned as guard's

KEY_ORDER, DISK_ORDER = ("t_1", "t_2", "t_9"), ("t_2", "t_9", "t_1")


@pytest.mark.parametrize("first", ["settle", "mark"])
async def test_settles_and_marks_of_several_sells_take_their_triggers_in_key_order(
        db_url: str, store: TriggerStore, first: str) -> None:
    # the one held at the gate comes with its triggers out of key order (the events', or the answers' order)
    settling, marking = (DISK_ORDER, KEY_ORDER) if first == "settle" else (KEY_ORDER, DISK_ORDER)
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    for trigger_id in ("t_2", "t_9", "t_1"):
        await insert_trigger(conn, trigger_id, "STOP_LOSS", price="0.3", fraction="1")
    await conn.execute("UPDATE triggers SET state = 'FIRED', order_id = 'co_' || id, fire_size = 10")
    await conn.close()
    def settle() -> Coroutine[Any, Any, Any]:
        return store.settle_many([(t, f"co_{t}", None, "", D(4), D("0.3")) for t in settling])

    def mark() -> Coroutine[Any, Any, Any]:
        return store.mark_submitted([(t, f"co_{t}") for t in marking])

    # the gate holds the first at t_9, with t_2 taken (or t_1 and t_2)
    held, other = (settle, mark) if first == "settle" else (mark, settle)
    outcome = await race_at_gate(db_url, "SELECT 1 FROM triggers WHERE id = 't_9' FOR UPDATE", held, other)
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT id, filled_size, submitted_at IS NOT NULL FROM triggers ORDER BY id") == [
        (t, D(4), True) for t in ("t_1", "t_2", "t_9")]
