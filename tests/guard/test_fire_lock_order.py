"""A fire whose OCO siblings include FIRED ones (partial rungs whose SELLs are out) locks them with its own row in
one statement in key order, as the settling of their order events and the mark of their SELLs take them, so none
of them deadlocks with the fire.

An ARMED trigger has FIRED siblings whenever a partial rung of its group fired (a rung's fire leaves its siblings
armed); the engine passes such a rung to a closing sibling's fire when it watches it again, re-armed after a fire
whose record it could not confirm. Not a defect found: this holds the order for that case (the test passed on the
code it was written against). The settle or mark, of the rungs and of another FIRED trigger, is held at a chosen point
by a third transaction holding that other trigger's row.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from decimal import Decimal as D
from typing import Any

import pytest

from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from tests.executor.conftest import rows
from tests.guard.standins import db, insert_trigger, set_position
from tests.guard.test_lock_order_triggers import _sell, store
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration
__all__ = ["store"]  # the fixture, on a pool planned as guard's

RUNGS = ("t_2", "t_3")  # FIRED siblings of t_1
FIRED = ("t_3", "t_5", "t_2")  # the rungs and t_5 (of another group), in the order their events (or answers) came
WRITERS: dict[str, Callable[[TriggerStore], Coroutine[Any, Any, object]]] = {
    "settle": lambda s: s.settle_many([(t, f"co_{t}", None, "", D(4), D("0.3")) for t in FIRED]),
    "mark": lambda s: s.mark_submitted([(t, f"co_{t}") for t in FIRED]),
}


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_fire_with_fired_siblings_takes_them_in_key_order(db_url: str, store: TriggerStore,
                                                                  writer: str) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    await insert_trigger(conn, "t_1", "STOP_LOSS", price="0.3", fraction="1", oco="g")
    for rung in RUNGS:
        await insert_trigger(conn, rung, "TAKE_PROFIT", price="0.6", fraction="0.25", oco="g")
    await insert_trigger(conn, "t_5", "TAKE_PROFIT", price="0.6", fraction="0.25", oco="h")
    await conn.execute("UPDATE triggers SET state = 'FIRED', order_id = 'co_' || id, fire_size = 25"
                       " WHERE id <> 't_1'")
    await conn.close()
    # the gate holds the writer at t_5, with t_2 and t_3 taken (in the events' order: t_3 alone); the fire, with t_1
    # taken, then waits for t_2 (for t_3, and the writer would wait for it at t_2)
    outcome = await race_at_gate(db_url, "SELECT 1 FROM triggers WHERE id = 't_5' FOR UPDATE",
                                 lambda: WRITERS[writer](store),
                                 lambda: store.fire("t_1", list(RUNGS), D(0), TickInfo(D("0.3")), _sell))
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT id, state, filled_size, submitted_at IS NOT NULL FROM triggers ORDER BY id") == [
        ("t_1", "FIRED", D(0), False),
        *[(t, "FIRED", D(4) if writer == "settle" else D(0), writer == "mark") for t in ("t_2", "t_3", "t_5")]]
