"""A closing copy exit whose SELL sold only part and then ended LOST or FAILED (not CANCELLED) leaves shares held:
the position's exits are armed again for them, as after a SELL the venue cancelled in part."""

from __future__ import annotations

from typing import Any

import pytest

from tests.guard.conftest import GuardFactory
from tests.guard.standins import StandIns, set_position
from tests.guard.test_copy_exits_renewal import _n_armed, _stop_loss_selling
from tests.helpers import eventually
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("end", [epb.ORDER_EVENT_TYPE_LOST, epb.ORDER_EVENT_TYPE_FAILED])
async def test_stop_loss_whose_sell_filled_in_part_then_ended_lost_or_failed_guards_the_rest(
        end: int, db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn, guard, first = await _stop_loss_selling(db_url, redis, standins, make_guard)
    executor = standins.executor
    await set_position(conn, "60", "0.40")  # 40 of the 100 sold
    await executor.emit(executor.event(first, epb.ORDER_EVENT_TYPE_PARTIALLY_FILLED, filled="40", price="0.29"))
    await executor.emit(executor.event(first, end, filled="40", price="0.29", reason="VENUE_LOST"))

    async def ended() -> dict[str, Any] | None:
        row = await (await conn.execute("SELECT state, filled_size FROM triggers WHERE id = %s",
                                        (first.trigger_id,))).fetchone()
        return row if row is not None and row["state"] == "FAILED" else None

    assert (await eventually(ended))["filled_size"] == 40
    await guard.drain()
    assert await eventually(lambda: _n_armed(conn, 2), timeout_s=5), "60 shares held with no exit armed"
    await standins.ingest.tick(bid="0.28", ask="0.30")  # still under the stop: the renewed stop sells the rest
    await eventually(lambda: len(executor.sells) == 2)
    assert executor.sells[1].size == "60"
    await conn.close()
