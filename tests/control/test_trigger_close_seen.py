"""A trigger records, with the life of the position it guards, the close it saw when nothing was held (the
database's value, read in the same statement), so guard tells a stop set between two lives from the ended life's
without control's clock: the row's closed_at when it is not OPEN, the epoch when the position was never held (no
close, before any), none while it is OPEN (its life is recorded)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.control.conftest import ASSET, AUTH, FOLLOWER, Stubs, trigger
from tests.control.support import execute, query
from tradingtools.control.v1 import control_pb2 as pb

pytestmark = pytest.mark.integration


async def _create(stubs: Stubs, **overrides: Any) -> str:
    made = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(**overrides)), metadata=AUTH)
    return made.id


def _recorded(db_url: str, trigger_id: str) -> tuple[Any, Any]:
    rows = query(db_url, "SELECT position_opened_at, position_closed_seen FROM triggers WHERE id = %s",
                 (trigger_id,))
    assert len(rows) == 1
    return rows[0][0], rows[0][1]


async def test_a_trigger_records_the_close_it_saw_or_the_life_it_guards(stubs: Stubs, db_url: str) -> None:
    never_held = await _create(stubs)
    execute(db_url, "INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, state, opened_at, closed_at)"
            " VALUES ('w_456', %s, %s, 0, 'CLOSED', now() - interval '1 hour', now() - interval '1 minute')",
            (ASSET, FOLLOWER))
    closed_at = query(db_url, "SELECT closed_at FROM positions")[0][0]
    between = await _create(stubs, size="40")
    execute(db_url, "UPDATE positions SET size = 12.5, state = 'OPEN', closed_at = NULL, opened_at = now()"
            " WHERE follower_wallet_id = 'w_456' AND asset_id = %s", (ASSET,))
    held = await _create(stubs, size="0", sell_fraction="0.5")
    opened_at = query(db_url, "SELECT opened_at FROM positions")[0][0]
    assert _recorded(db_url, never_held) == (None, datetime(1970, 1, 1, tzinfo=UTC))
    assert _recorded(db_url, between) == (None, closed_at)
    assert _recorded(db_url, held) == (opened_at, None)
