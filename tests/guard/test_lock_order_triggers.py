"""Guard's writes of several trigger rows take them in key order, as a fire locks its trigger and its OCO siblings
(``ORDER BY id FOR UPDATE``), so they never deadlock with a fire.

A hold or release of the triggers on an asset whose book went stale or fresh, the cancellation of a resolved
market's triggers (``UPDATE ... WHERE id = ANY(...)``) and the write of trailing marks (``UPDATE ... FROM unnest``)
took the rows in their plan's order: a scan of the ARMED triggers' index by asset and wallet (or a bitmap scan)
meets them in their order on disk, not by id. Such a write meeting sibling t_2 first, then t_9, then t_1, while a
fire of t_1 had taken t_1 and waited for t_2, deadlocked (40P01): PostgreSQL aborted the fire after a second's wait
(its wait had begun first) in its lock step, before any decision: nothing sent or recorded, the trigger re-armed
for a later tick. A third transaction holding t_9 holds the write at the chosen point.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import KEYED_LOOKUPS, create_pool
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.fire_records import FireDecision, FireFacts
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import State
from services.guard.domain.trigger_rows import TriggerRow
from tests.executor.conftest import rows
from tests.guard.standins import ASSET, db, insert_trigger, set_position
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TriggerStore]:
    """Guard's trigger store on a pool planned as guard's."""
    pool: AsyncConnectionPool[Any] = await create_pool(db_url, min_size=1, max_size=3, autocommit=True,
                                                       options=KEYED_LOOKUPS)
    try:
        yield TriggerStore(pool, lambda: datetime.now(UTC))
    finally:
        await pool.close()


def _sell(_row: TriggerRow, facts: FireFacts) -> FireDecision:
    return FireDecision(State.FIRED, "", facts.held, facts.held, "co_t_1", b"")


async def _asset_with_a_pair(db_url: str, kind: str, reason: str) -> None:
    """t_1 and its OCO sibling t_2, and t_9 on the same asset; on disk t_2, t_9, t_1."""
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    for trigger_id, oco in (("t_2", "g"), ("t_9", ""), ("t_1", "g")):
        await insert_trigger(conn, trigger_id, kind, price="0.3", trail="0.1", fraction="1", oco=oco)
    await conn.execute("UPDATE triggers SET state_reason = %s", (reason,))
    await conn.close()


ALL = ["t_1", "t_2", "t_9"]
FIRED = [("t_1", "FIRED", "", D(0)), ("t_2", "CANCELLED", "OCO_SIBLING_FIRED", D(0))]
# each writer of several triggers: the rows' kind and reason before, the write, the rows after it and the fire
WRITERS: dict[str, tuple[str, str, Callable[[TriggerStore], Coroutine[Any, Any, object]], list[Any]]] = {
    "hold": ("STOP_LOSS", "", lambda s: s.set_holds([(ALL, True, TickInfo())]),
             [*FIRED, ("t_9", "ARMED", "BOOK_STALE", D(0))]),
    "release": ("STOP_LOSS", "BOOK_STALE", lambda s: s.set_holds([(ALL, False, TickInfo())]),
                [*FIRED, ("t_9", "ARMED", "", D(0))]),
    "resolution": ("STOP_LOSS", "", lambda s: s.cancel_assets([ASSET], "MARKET_RESOLVED", TickInfo()),
                   [(t, "CANCELLED", "MARKET_RESOLVED", D(0)) for t in ALL]),
    "marks": ("TRAILING_STOP", "", lambda s: s.save_marks([(D("0.5"), ALL)]),
              [("t_1", "FIRED", "", D("0.5")), ("t_2", "CANCELLED", "OCO_SIBLING_FIRED", D("0.5")),
               ("t_9", "ARMED", "", D("0.5"))]),
}


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_write_of_several_triggers_takes_them_in_key_order(db_url: str, store: TriggerStore,
                                                                    writer: str) -> None:
    kind, reason, write, after = WRITERS[writer]
    await _asset_with_a_pair(db_url, kind, reason)
    # the gate holds the write at t_9, with t_2 taken (or t_1 and t_2, in key order)
    outcome = await race_at_gate(db_url, "SELECT 1 FROM triggers WHERE id = 't_9' FOR UPDATE", lambda: write(store),
                                 lambda: store.fire("t_1", ["t_2"], D(0), TickInfo(D("0.3")), _sell))
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT id, state, state_reason, high_water_mark FROM triggers ORDER BY id") == after
