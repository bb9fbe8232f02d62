"""A price ingest's gate left out and sends again once a changed trigger's band reached it (``observed_time_ns``):
guard reads it only while every trigger of its asset was armed or changed by the time it came, and while it is
young enough to fire on (``tick_view.replay_refused``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

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


@pytest.mark.parametrize(("observed", "now", "band", "margin", "after", "refused"), [
    (20 * MS, 40 * MS, _band(10 * MS), 0, 0, False),  # every trigger armed before it came
    (20 * MS, 40 * MS, _band(10 * MS, 20 * MS), 0, 0, False),  # (armed as it came: at or before)
    (20 * MS, 40 * MS, _band(10 * MS, 32 * MS), 0, 0, True),  # one armed after it came
    (20 * MS, 40 * MS, _band(), 0, 0, False),  # triggers loaded at start, none armed since
    (20 * MS, 40 * MS, None, 0, 0, False),  # no trigger left: nothing to fire anyway
    (20 * MS, 20 * MS + 2 * S, _band(10 * MS), 0, 0, False),  # as old as guard fires on
    (20 * MS, 20 * MS + 2 * S + 1, _band(10 * MS), 0, 0, True),  # older
    (20 * MS, 40 * MS, _band(10 * MS), 10 * MS, 0, False),  # the clocks' margin: just far enough after the arm
    (20 * MS, 40 * MS, _band(11 * MS), 10 * MS, 0, True),  # too close to it
    (20 * MS, 40 * MS, _band(10 * MS), 0, 20 * MS, False),  # came as guard read the stored book
    (20 * MS, 40 * MS, _band(10 * MS), 0, 21 * MS, True),  # before guard read a newer price (or loaded)
])
def test_replay_refused(observed: int, now: int, band: AssetBand | None, margin: int, after: int,
                        refused: bool) -> None:
    assert replay_refused(observed, now, 2 * S, band, margin, after) is refused


def _stop(tid: str, price: str) -> TriggerSpec:
    return TriggerSpec(tid, A, Kind.STOP_LOSS, trigger_price=D(price))


@pytest.mark.parametrize("later", [False, True])
async def test_guard_fires_on_a_price_sent_again_only_when_no_trigger_came_after_it(later: bool) -> None:
    """A dip that came 20 ms ago crosses x (armed 500 ms ago) and y (armed 10 ms ago, when there is y)."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.engine.upsert(_stop("x", "0.45"), armed_ns=NOW_NS - 500 * MS)
    if later:
        guard.engine.upsert(_stop("y", "0.46"), armed_ns=NOW_NS - 10 * MS)
    tick = price_tick("0.44", A)
    tick.observed_time_ns = NOW_NS - 20 * MS
    out = await guard.on_tick(tick)
    await guard.drain()
    assert [f.spec.id for f in out.fired] == ([] if later else ["x"])
    assert guard.stats.replays_refused == (1 if later else 0)


class _Books:
    """Stored books as guard's market cache reads them: none here (only that they were read matters)."""

    async def books_and_feed(self, _asset_ids: Any) -> tuple[dict[str, Any], None]:
        return {}, None


async def test_a_price_sent_again_that_came_before_guard_read_the_stored_book_is_left_alone() -> None:
    """Guard read the asset's stored book (a catch-up, a re-arm's recheck) 10 ms ago, which may have lifted a mark
    or held a trigger by a newer price than the one sent again (20 ms old): read after it, that one would be out of
    order. A price that came after the read is read."""
    guard, _store = in_process_guard([], stub_fires=True)
    guard.markets = _Books()  # type: ignore[assignment]
    guard.engine.upsert(_stop("x", "0.45"), armed_ns=NOW_NS - 500 * MS)
    guard.clock_ns = lambda: NOW_NS - 10 * MS
    await guard.recheck(A)
    guard.clock_ns = lambda: NOW_NS
    tick = price_tick("0.44", A)
    tick.observed_time_ns = NOW_NS - 20 * MS
    assert not (await guard.on_tick(tick)).fired and guard.stats.replays_refused == 1
    tick.observed_time_ns = NOW_NS - 5 * MS
    assert [f.spec.id for f in (await guard.on_tick(tick)).fired] == ["x"]
    await guard.drain()


async def test_a_price_sent_again_that_came_before_guard_loaded_its_triggers_is_left_alone() -> None:
    guard, _store = in_process_guard([_stop("x", "0.45")], stub_fires=True)  # loaded: no arm time
    guard.replays_after_ns = NOW_NS - 10 * MS  # what start() records
    tick = price_tick("0.44", A)
    tick.observed_time_ns = NOW_NS - 20 * MS
    assert not (await guard.on_tick(tick)).fired and guard.stats.replays_refused == 1
