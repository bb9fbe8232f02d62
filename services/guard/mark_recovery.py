"""Start-up: the trailing marks a crash lost, or that prices logged while guard was down would have lifted, taken back
from the tick log (:mod:`services.guard.domain.mark_replay`) before the first bands and the catch-up of the stored
books, so that both work from the marks the stops really have.

The stretch read is the log after the cursor of guard's last complete mark save (:class:`MarkFlusher` keeps it)
through the cursor the tick stream starts after. With no cursor kept (a first start, Redis lost it) it is the last
``fallback_s``; it never reaches further back than ``max_s``. A log trimmed past the kept cursor (its length cap
reached while guard was down) is reported: the rises on what it dropped are not recovered. The marks lifted go to
the engine and to the next mark flush; triggers another change reached while the log was read are left to that
change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from common.livefeed import entry_key
from services.guard.domain.mark_replay import PriceHighs, recovered_marks, tick_prices
from services.guard.domain.trigger_index import Engine
from services.guard.domain.trigger_model import Kind, TriggerSpec, live_mark
from services.guard.mark_flush import MarkFlusher
from tradingtools.market.v1 import market_pb2 as mpb

log = logging.getLogger(__name__)


class ReplaySource(Protocol):
    """Where the replay reads (:class:`services.guard.adapters.mark_replay.MarkReplaySource`)."""

    async def through(self) -> str | None:
        """The cursor of the last complete mark save, if kept."""

    def ticks(self, after: str, end: str) -> AsyncIterator[list[mpb.PriceTick]]:
        """The log's ticks after ``after`` through ``end``, in batches."""

    async def changed_ns(self, ids: Sequence[str]) -> dict[str, int]:
        """When each ARMED trigger's row last changed (Unix ns)."""

    async def trimmed(self, after: str) -> bool:
        """Whether the log no longer holds every entry after ``after``."""


@dataclass
class Recovery:
    """What one start-up replay read and lifted."""

    start: str = ""  # the cursor read after
    saved: bool = False  # the start is the kept cursor (else the fallback window)
    clipped: bool = False  # the kept cursor was older than max_s: the replay started later
    trimmed: bool = False  # the log no longer held every entry after the kept cursor: rises on those are lost
    ticks: int = 0
    lifted: int = 0
    read_s: float = 0.0


async def recover_marks(engine: Callable[[], Engine], marks: MarkFlusher, source: ReplaySource, *, end: str,
                        now_ms: int, fallback_s: float, max_s: float, margin_ns: int,
                        changed: Callable[[str], object] = lambda _a: None) -> Recovery:
    """Lift the loaded trailing stops' marks by the log's prices after the last complete save through ``end``
    (``changed``: told each asset whose marks rose). Returns what it did."""
    started = time.perf_counter()
    out = Recovery()
    saved = await source.through()
    floor = (max(0, now_ms - int(max_s * 1000)), 0)
    start = entry_key(saved) if saved else (max(0, now_ms - int(fallback_s * 1000)), 0)
    out.saved = saved is not None
    if start < floor:
        start, out.clipped = floor, True
    out.start = f"{start[0]}-{start[1]}"
    if start >= entry_key(end):
        return out
    if out.saved and not out.clipped:
        out.trimmed = await source.trimmed(out.start)
    current = engine()
    with current.noting() as touched:
        highs = PriceHighs()
        async for batch in source.ticks(out.start, end):
            out.ticks += len(batch)
            for tick in batch:
                if current.watches(tick.asset_id) and (got := tick_prices(tick)) is not None:
                    highs.add(tick.asset_id, *got)
        stops = [spec for asset_id in highs.assets() for tid in current.asset_ids(asset_id)
                 if (spec := current.get(tid)) is not None and spec.kind is Kind.TRAILING_STOP]
        times = await source.changed_ns([s.id for s in stops])
    lifted = recovered_marks([s for s in stops if s.id not in touched], times, highs, margin_ns)
    applied = _apply(current, lifted)
    marks.keep(applied)
    for asset_id in {s.asset_id for s in stops if s.id in applied}:
        changed(asset_id)
    out.lifted = len(applied)
    out.read_s = time.perf_counter() - started
    return out


def _apply(engine: Engine, lifted: dict[str, Decimal]) -> dict[str, Decimal]:
    """Each lifted mark into the engine, unless its mark is as high already."""
    applied: dict[str, Decimal] = {}
    for tid, mark in lifted.items():
        spec: TriggerSpec | None = engine.get(tid)
        if spec is None or mark <= live_mark(spec.high_water_mark, spec.activation_price):
            continue
        engine.upsert(spec.with_mark(mark))  # the same trigger: armed when it was
        applied[tid] = mark
    return applied
