"""The firing path's bookkeeping: its counters, the batched "acknowledged" marks of SELLs, and the SELLs sent by
fires that were not recorded (counted as in flight on their position until the executor answered them)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.decimals import ZERO
from services.guard.loops import Kicked


@dataclass
class FireStats:
    """Counters of the firing path, and the last stage durations in ms (slot wait, locked reads up to the
    decision, decision → commit, decision → executor's answer)."""

    decided: int = 0
    fired: int = 0
    not_sent: int = 0
    lost_race: int = 0
    deferred: int = 0
    changed: int = 0
    submitted: int = 0
    duplicates: int = 0
    submit_retries: int = 0
    submit_rejected: int = 0
    record_errors: int = 0
    settle_retries: int = 0
    resubmitted: int = 0
    stages_ms: deque[tuple[float, float, float, float]] = field(default_factory=lambda: deque(maxlen=1000))
    before_ms: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=1000))

    def summary(self) -> dict[str, Any]:
        """Counters and the median stage durations for the periodic stats log."""
        stages = sorted(self.stages_ms, key=sum)
        fire: dict[str, Any] = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        if stages:
            mid = stages[len(stages) // 2]
            fire["median_fire_ms"] = {"slot": round(mid[0], 2), "reads": round(mid[1], 2), "commit": round(mid[2], 2),
                                      "submit": round(mid[3], 2)}
        before = sorted(self.before_ms, key=sum)
        if before:
            mid4 = before[len(before) // 2]
            fire["median_before_fire_ms"] = {"ingest_to_tick_handled": round(mid4[0], 2),
                                             "handled_to_fire_task": round(mid4[1], 2)}
        return fire


class UnrecordedSells:
    """SELLs sent by fires whose record failed, by position (wallet, asset), while their SubmitOrder is under
    way. PostgreSQL counts a SELL as in flight from the executor's order row on (the fire's reads); before the
    executor wrote it, only this process knows the SELL left, so the next fire on the position adds these."""

    def __init__(self) -> None:
        # position → trigger id → (shares, the SubmitOrder call)
        self._sells: dict[tuple[str, str], dict[str, tuple[Decimal, asyncio.Future[Any]]]] = {}

    def add(self, position: tuple[str, str], trigger_id: str, size: Decimal,
            call: asyncio.Future[Any]) -> None:
        """Count ``size`` shares of ``trigger_id``'s SELL on ``position`` until ``call`` (its SubmitOrder) ends."""
        self._sells.setdefault(position, {})[trigger_id] = (size, call)
        call.add_done_callback(lambda _c: self._drop(position, trigger_id, call))

    def shares(self, position: tuple[str, str], *, besides: str) -> Decimal:
        """Shares of the position's unanswered SELLs, but for ``besides``'s own (firing it again resends it)."""
        sells = self._sells.get(position)
        return sum((n for tid, (n, _call) in sells.items() if tid != besides), ZERO) if sells else ZERO

    def _drop(self, position: tuple[str, str], trigger_id: str, call: asyncio.Future[Any]) -> None:
        sells = self._sells.get(position)
        if sells is not None and trigger_id in sells and sells[trigger_id][1] is call:
            del sells[trigger_id]
            if not sells:
                del self._sells[position]


class SubmittedMarker(Kicked):
    """Records, in batches, that the executor acknowledged SELLs (off the SELL's critical path)."""

    def __init__(self, mark: Callable[[list[tuple[str, str]]], Awaitable[None]], *,
                 min_interval_s: float = 0.0, delay_s: float = 0.0) -> None:
        # A mark that is late (or lost in a crash) only means one more, harmless, submission at start-up:
        # under load one UPDATE per ``min_interval_s`` instead of one per acknowledged SELL; and a SELL that
        # settles within ``delay_s`` (the settle records submitted_at) needs none at all.
        super().__init__("submitted marker", min_interval_s=min_interval_s, delay_s=delay_s)
        self.mark = mark
        self.pending: dict[str, str] = {}

    def add(self, trigger_id: str, order_id: str) -> None:
        """Queue one acknowledged SELL."""
        self.pending[trigger_id] = order_id
        self.kick()

    def discard(self, trigger_id: str, order_id: str) -> None:
        """Drop a queued mark that is already recorded (the SELL settled, which sets ``submitted_at``)."""
        if self.pending.get(trigger_id) == order_id:
            del self.pending[trigger_id]

    async def step(self) -> None:
        """Write everything queued."""
        while self.pending:
            batch, self.pending = self.pending, {}
            try:
                await self.mark(list(batch.items()))
            except BaseException:
                self.pending = {**batch, **self.pending}
                raise
