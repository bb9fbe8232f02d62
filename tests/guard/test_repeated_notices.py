"""Control announces a trigger again when a retry finds its change made (a create's replay, a PATCH that changes
nothing): guard reloads the row, and records no change that did not happen."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.guard.domain.trigger_model import Kind, Origin, Source, State
from services.guard.domain.trigger_rows import TriggerRow
from tests.guard.inprocess import in_process_guard

D = Decimal


def stop(version: int) -> TriggerRow:
    """A stored ARMED stop-loss at ``version`` (1: as created)."""
    now = datetime.now(UTC)
    return TriggerRow(id="s", wallet="0x" + "1" * 40, follower_wallet_id="w", subscription_id="", asset_id="a",
                      kind=Kind.STOP_LOSS, trigger_price=D("0.30"), trail_pct=D(0), activation_price=D(0),
                      size=D(0), sell_fraction=D(1), oco_group="", price_source=Source.BEST_BID, state=State.ARMED,
                      state_reason="", high_water_mark=D(0), source=Origin.MANUAL, order_id="", fire_count=0,
                      version=version, create_time=now, update_time=now, fired_time=None)


@pytest.mark.parametrize(("versions", "events"), [
    ([1], [("ARMED", 1)]),
    ([1, 1], [("ARMED", 1), ("ARMED", 1)]),  # announced again: the same event (its id dedupes), no UPDATED
    ([1, 2], [("ARMED", 1), ("UPDATED", 2)]),  # a PATCH
    ([1, 2, 2], [("ARMED", 1), ("UPDATED", 2), ("UPDATED", 2)]),
    ([3], [("ARMED", 3)]),  # first heard of after changes: armed here
])
async def test_a_repeated_notice_records_no_change(versions: list[int], events: list[tuple[str, int]]) -> None:
    guard, store = in_process_guard([])
    seen: list[tuple[str, int]] = []
    current: list[TriggerRow] = []

    async def get(_tid: str) -> TriggerRow:
        return current[-1]

    async def record_observed(row: TriggerRow, kind: str, _reason: str) -> None:
        seen.append((kind, row.version))

    store.get = get  # type: ignore[attr-defined]
    store.record_observed = record_observed  # type: ignore[attr-defined]
    for version in versions:
        current.append(stop(version))
        await guard.changes.reload("s")
    assert seen == events
    assert guard.engine.get("s") is not None

