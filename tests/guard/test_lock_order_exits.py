"""Guard's copy-exit writes take the trigger rows of a position in key order, as a fire, a hold of an asset's
triggers on a stale book and control's cancellation of a subscription's triggers take them, so they never deadlock.

The cancellation of the triggers of a life that ended (the SELL that left the position nothing, or a group closed
on a reopened position) and the resize of a group's exits took them in their plan's order: a scan of the ARMED
triggers' index by asset and wallet (or by group) meets them in their order on disk (t_2, t_9, t_1). Against a hold
taking t_1 then t_2 they deadlocked (40P01); the position's advisory lock does not help, a hold does not take it.
PostgreSQL aborted the hold (its wait had begun first): that batch of holds was lost (the rows kept no BOOK_STALE,
no HELD_STALE event went out). A third transaction holding t_9 holds the write at the chosen point.

(From the review of lock order between the services' transactions.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from common.storage import KEYED_LOOKUPS, create_pool
from services.guard.adapters.exit_group_writes import close_group
from services.guard.adapters.exit_store import ExitStore
from services.guard.adapters.trigger_store import TriggerStore
from services.guard.domain.tick_view import TickInfo
from tests.executor.conftest import rows
from tests.guard.standins import ASSET, WALLET_ID, db, insert_trigger, set_position
from tests.lock_race import race_at_gate

pytestmark = pytest.mark.integration


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool planned as guard's."""
    p: AsyncConnectionPool[Any] = await create_pool(db_url, min_size=1, max_size=3, autocommit=True,
                                                    options=KEYED_LOOKUPS)
    try:
        yield p
    finally:
        await p.close()


async def _closed(pool: AsyncConnectionPool[Any]) -> object:
    return await ExitStore(pool, _now).on_sell_fill(WALLET_ID, ASSET)


async def _group_closed(pool: AsyncConnectionPool[Any]) -> object:
    async with pool.connection() as conn, conn.transaction():
        return await close_group(conn, "g", _now())


async def _resized(pool: AsyncConnectionPool[Any]) -> object:
    async with pool.connection() as conn, conn.transaction():
        return await ExitStore(pool, _now)._resize(conn, {"oco_group": "g", "position_size": D(100)}, D(50), _now())


# each write: the position closed before it, the write, the triggers after it and the hold
CANCELLED = [(t, "CANCELLED", "POSITION_CLOSED", D(10)) for t in ("t_1", "t_2", "t_9")]
WRITERS: dict[str, tuple[bool, Callable[[AsyncConnectionPool[Any]], Coroutine[Any, Any, object]], list[Any]]] = {
    "closed life": (True, _closed, CANCELLED),
    "closed group": (True, _group_closed, CANCELLED),
    "resize": (False, _resized, [(t, "ARMED", "BOOK_STALE", D(5)) for t in ("t_1", "t_2", "t_9")]),
}


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_copy_exit_write_takes_its_triggers_in_key_order(db_url: str, pool: AsyncConnectionPool[Any],
                                                                 writer: str) -> None:
    closed, write, after = WRITERS[writer]
    conn = await db(db_url)
    await set_position(conn, "100", "0.4")
    for trigger_id in ("t_2", "t_9", "t_1"):  # on disk in this order
        await insert_trigger(conn, trigger_id, "STOP_LOSS", price="0.3", size="10", oco="g")
    await conn.execute("UPDATE triggers SET source = 'COPY'")
    if closed:
        await conn.execute("UPDATE positions SET size = 0, state = 'CLOSED', closed_at = now()")
    await conn.close()
    # the gate holds the write at t_9, with t_2 taken (or t_1 and t_2)
    holds = [(["t_1", "t_2", "t_9"], True, TickInfo())]
    outcome = await race_at_gate(db_url, "SELECT 1 FROM triggers WHERE id = 't_9' FOR UPDATE", lambda: write(pool),
                                 lambda: TriggerStore(pool, _now).set_holds(holds))
    assert outcome == ["", ""]
    assert rows(db_url, "SELECT id, state, state_reason, size FROM triggers ORDER BY id") == after
