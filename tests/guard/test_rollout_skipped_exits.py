"""A rollout's old guard that dies after committing a position's copy exits but before announcing them, on an order
event the new guard's consumer never reads (the shared cursor had passed it when the new guard's consumer started,
after its start-up load): the new guard arms those exits with no later order event, so the position is never left
unwatched."""

from __future__ import annotations

from typing import Any

import pytest

from tests.guard.conftest import GuardFactory
from tests.guard.standins import BUY, StandIns, copy_fill, set_position
from tests.guard.test_rollout import _armed_exits
from tests.guard.test_rollout_unannounced_exits import _stop_loss_fires_through, _two_guards
from tests.helpers import eventually

pytestmark = pytest.mark.integration


async def test_exits_a_dead_guard_committed_on_an_event_the_other_never_reads_are_armed_without_another_event(
        db_url: str, redis: Any, standins: StandIns, make_guard: GuardFactory) -> None:
    conn, old, new = await _two_guards(db_url, redis, standins, make_guard)
    await set_position(conn, "100", "0.40")
    await old.guard.on_order_event(copy_fill("co_buy1", BUY, filled="100", price="0.40"))  # committed, unannounced
    exit_ids = await _armed_exits(conn)
    assert exit_ids

    await eventually(lambda: exit_ids <= new.guard.engine.ids(), timeout_s=10, message="exits unwatched")
    await _stop_loss_fires_through(new, old, standins)
    await conn.close()
