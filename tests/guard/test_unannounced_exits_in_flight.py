"""The group's ARMED exits a guard reads after a fill and arms when its engine lacks them (another guard made them
and died unannounced) leave out an exit whose fire is under way in this guard: the fire keeps it, and a SELL already
decided is not decided again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.guard.conftest import GuardFactory
from tests.guard.standins import BUY, StandIns, add_market, copy_fill, db, insert_subscription, set_position
from tests.guard.test_rollout import _armed_exits
from tests.guard.test_rollout_unannounced_exits import _dies_before_announcing
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_an_exit_whose_fire_is_under_way_is_left_to_the_fire_when_the_group_is_read_again(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn = await db(db_url)
    await insert_subscription(conn, "sub_1", exits={"stopLossPct": "25", "takeProfitPct": "50"})
    await add_market(redis)
    old = await make_guard()
    new = await make_guard()
    _dies_before_announcing(old)
    await set_position(conn, "100", "0.40")
    await old.guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))
    exit_ids = await _armed_exits(conn)
    assert len(exit_ids) == 2
    firing = min(exit_ids)
    new.guard.firer.in_flight.add(firing)  # as a fire of it under way (taken out of the engine) holds it

    await set_position(conn, "150", "0.40")
    await new.guard.on_order_event(copy_fill("co_buy2", BUY, filled="50", price="0.40"))
    await eventually(lambda: exit_ids - {firing} <= new.guard.engine.ids(), timeout_s=2)
    assert firing not in new.guard.engine.ids()

    new.guard.firer.in_flight.discard(firing)  # the fire ended without recording it: watched again
    await set_position(conn, "160", "0.40")
    await new.guard.on_order_event(copy_fill("co_buy3", BUY, filled="10", price="0.40"))
    await eventually(lambda: exit_ids <= new.guard.engine.ids(), timeout_s=2)
    await conn.close()
