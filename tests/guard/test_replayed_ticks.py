"""A price ingest's gate left out and sends again once a changed trigger's band reached it (``observed_time_ns``):
guard reads it only while every trigger of its asset was armed or changed by the time it came, and while it is
young enough to fire on (``tick_view.replay_refused``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.bands import AssetBand, SourceBand
from services.guard.domain.tick_view import replay_refused
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.inprocess import NOW_NS, in_process_guard, price_tick

A = "asset-1"
D = Decimal
MS = 1_000_000
S = 1_000 * MS


def _band(*changes: int) -> AssetBand:
    return AssetBand((SourceBand(0, D("0.45"), None, False),), False, changes)


@pytest.mark.parametrize(("observed", "now", "band", "refused"), [
    (20 * MS, 40 * MS, _band(10 * MS), False),  # every trigger armed before it came
    (20 * MS, 40 * MS, _band(10 * MS, 20 * MS), False),  # (armed as it came: at or before)
    (20 * MS, 40 * MS, _band(10 * MS, 32 * MS), True),  # one armed after it came
    (20 * MS, 40 * MS, _band(), False),  # triggers loaded at start, none armed since
    (20 * MS, 40 * MS, None, False),  # no trigger left: nothing to fire anyway
    (20 * MS, 20 * MS + 2 * S, _band(10 * MS), False),  # as old as guard fires on
    (20 * MS, 20 * MS + 2 * S + 1, _band(10 * MS), True),  # older
])
def test_replay_refused(observed: int, now: int, band: AssetBand | None, refused: bool) -> None:
    assert replay_refused(observed, now, 2 * S, band) is refused


def _stop(tid: str, price: str) -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.STOP_LOSS, trigger_price=D(price))


@pytest.mark.parametrize("later", [False, True])
async def test_guard_fires_on_a_price_sent_again_only_when_no_trigger_came_after_it(later: bool) -> None:
    """A dip that came 20 ms ago crosses x (armed 30 ms ago) and y (armed 10 ms ago, when there is y)."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_stop("x", "0.45"), armed_ns=NOW_NS - 30 * MS)
    if later:
        guard.engine.upsert(_stop("y", "0.46"), armed_ns=NOW_NS - 10 * MS)
    tick = price_tick("0.44", A)
    tick.observed_time_ns = NOW_NS - 20 * MS
    out = await guard.on_tick(tick)
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ([] if later else ["x"])
    assert guard.stats.replays_refused == (1 if later else 0)
