"""Two reloads of one trigger at once (a fire's re-arm and control's notice of a PATCH, or a resync's re-read and
a copy exit's cancel): the engine ends on the row PostgreSQL holds last, whichever read answered last."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.guard.conftest import GuardFactory
from tests.guard.standins import StandIns, add_market, db, insert_trigger, publish_change, set_position, wait_connected
from tests.helpers import eventually

pytestmark = pytest.mark.integration


class _HeldRead:
    """Holds the first read of ``trigger_id`` (through ``method`` of the guard's store) once it has its answer,
    until released: the slow read of an older row."""

    def __init__(self, guard: Any, method: str, trigger_id: str) -> None:
        self.read, self.release = asyncio.Event(), asyncio.Event()
        real: Callable[..., Awaitable[Any]] = getattr(guard.store, method)

        async def held(ids: Any, *args: Any, **kwargs: Any) -> Any:
            answer = await real(ids, *args, **kwargs)
            if not self.read.is_set() and trigger_id in ([ids] if isinstance(ids, str) else list(ids)):
                self.read.set()
                await self.release.wait()
            return answer

        setattr(guard.store, method, held)


def _price(guard: Any, trigger_id: str) -> Decimal | None:
    spec = guard.engine.get(trigger_id)
    return None if spec is None else spec.trigger_price


async def _patch(conn: Any, redis: Any, trigger_id: str, price: str) -> None:
    """Control's PATCH of the stop price: committed, then announced."""
    await conn.execute("UPDATE triggers SET trigger_price = %s, version = version + 1 WHERE id = %s",
                       (Decimal(price), trigger_id))
    await publish_change(redis, trigger_id)


@pytest.mark.parametrize("method", ["get", "get_many"])
async def test_a_patch_reloaded_while_an_older_read_of_the_trigger_was_under_way_is_kept(
        method: str, db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await set_position(conn, "100", "0.60")
    await add_market(redis)
    await insert_trigger(conn, "trg_sl", "STOP_LOSS", price="0.30", fraction="1")
    guard = (await make_guard()).guard
    await wait_connected(standins.ingest)
    assert _price(guard, "trg_sl") == Decimal("0.30")

    # a fire's re-arm (or a resync's re-read) reads the row at 0.30 and is slow to answer
    held = _HeldRead(guard, method, "trg_sl")
    rearm = asyncio.create_task(guard.changes.reload("trg_sl", observed=False) if method == "get"
                                else guard.changes.reload_many(["trg_sl"]))
    await asyncio.wait_for(held.read.wait(), 5)

    # meanwhile the user raises the stop to 0.50: control commits and announces it, guard reloads it
    await _patch(conn, redis, "trg_sl", "0.50")
    await eventually(lambda: _price(guard, "trg_sl") == Decimal("0.50"))

    held.release.set()
    await asyncio.wait_for(rearm, 5)
    assert _price(guard, "trg_sl") == Decimal("0.50")
    await standins.ingest.tick(bid="0.45", ask="0.47")  # through 0.50, above the old 0.30
    await eventually(lambda: len(standins.executor.sells) == 1, timeout_s=5)
    await conn.close()
