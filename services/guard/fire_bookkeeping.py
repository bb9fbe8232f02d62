"""The firing path's bookkeeping: its counters, the batched "acknowledged" marks of SELLs, and the SELLs sent by
fires that were not recorded (counted as in flight on their position until the executor has them)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.decimals import ZERO
from services.guard.loops import Kicked
from services.guard.ports import SubmitRejected


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
        """Counters, and the stage durations of the median fire and of the p99 one (by the stages' sum), for the
        periodic stats log. The stages after the decision (fires that sent a SELL) and those before it (every fire
        decided) are ranked each on their own: their median and p99 rows may be two different fires."""
        fire: dict[str, Any] = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        for label, rank in _RANKS:
            if stage := _ranked(self.stages_ms, rank):
                fire[f"{label}_fire_ms"] = dict(zip(("slot", "reads", "commit", "submit"), stage, strict=True))
            if before := _ranked(self.before_ms, rank):
                fire[f"{label}_before_fire_ms"] = dict(zip(("ingest_to_tick_handled", "handled_to_fire_task"), before,
                                                           strict=True))
        return fire


# (label, the index of its row among n rows in order): the upper median; the smallest row with at least 99 % of the
# rows at or below it
_RANKS: tuple[tuple[str, Callable[[int], int]], ...] = (
    ("median", lambda n: n // 2), ("p99", lambda n: max(0, math.ceil(n * 0.99) - 1)))


def _ranked(rows: Iterable[tuple[float, ...]], rank: Callable[[int], int]) -> tuple[float, ...]:
    """The row at ``rank`` of ``rows`` ordered by their sum, rounded; () when there is none."""
    ranked = sorted(rows, key=sum)
    return tuple(round(v, 2) for v in ranked[rank(len(ranked))]) if ranked else ()


@dataclass(slots=True)
class _Sell:
    size: Decimal
    order_id: str
    sent_ns: int  # the Order's routed_time_ns: the executor's age limit counts from it
    call: asyncio.Future[Any]


class UnrecordedSells:
    """SELLs sent by fires whose record failed, by position (wallet, asset). PostgreSQL counts a SELL as in flight
    from the executor's order row on (the fire's reads); before the executor wrote it, only this process knows the
    SELL left, so the next fire on the position adds these.

    One is counted until the executor answered its SubmitOrder (it took the order, whose row counts from then, or
    refused it), its order row is seen (:meth:`seen`: a call that timed out or failed is no answer, the executor may
    still take the order and write its row late), or it is older than ``max_age_ns``, past the executor's age limit
    (it refuses an order routed longer ago as STALE_ORDER): at most that long, never unbounded."""

    def __init__(self, max_age_ns: int) -> None:
        self.max_age_ns = max_age_ns
        self.unanswered = 0  # calls that ended with no answer (a deadline, the executor unreachable)
        self._sells: dict[tuple[str, str], dict[str, _Sell]] = {}  # position → trigger id → its SELL

    def add(self, position: tuple[str, str], trigger_id: str, size: Decimal, call: asyncio.Future[Any], *,
            order_id: str, sent_ns: int) -> None:
        """Count ``size`` shares of ``trigger_id``'s SELL ``order_id`` on ``position`` (see the class)."""
        self._expire(sent_ns)
        sell = _Sell(size, order_id, sent_ns, call)
        self._sells.setdefault(position, {})[trigger_id] = sell
        call.add_done_callback(lambda _c: self._answered(position, trigger_id, sell))

    def shares(self, position: tuple[str, str], *, besides: str, now_ns: int) -> Decimal:
        """Shares of the position's SELLs counted here, but for ``besides``'s own (firing it again resends it)."""
        self._expire(now_ns)
        sells = self._sells.get(position)
        return sum((s.size for tid, s in sells.items() if tid != besides), ZERO) if sells else ZERO

    def unseen(self, asset_id: str) -> list[str]:
        """The order ids of the SELLs counted on ``asset_id`` (any wallet): to look for their order rows."""
        return sorted(s.order_id for (_w, a), sells in self._sells.items() if a == asset_id for s in sells.values())

    def seen(self, order_ids: Iterable[str]) -> None:
        """The executor has orders of these: PostgreSQL counts them now."""
        found = set(order_ids)
        for position, sells in list(self._sells.items()):
            for tid, s in list(sells.items()):
                if s.order_id in found:
                    self._drop(position, tid, s)

    def forget(self, trigger_id: str) -> None:
        """``trigger_id``'s fire is recorded FIRED: PostgreSQL counts its SELL (the same order id) from its row."""
        for position, sells in list(self._sells.items()):
            if trigger_id in sells:
                self._drop(position, trigger_id, sells[trigger_id])

    def __len__(self) -> int:
        return sum(len(sells) for sells in self._sells.values())

    def _answered(self, position: tuple[str, str], trigger_id: str, sell: _Sell) -> None:
        call = sell.call
        if call.cancelled():
            return
        error = call.exception()
        if error is None or isinstance(error, SubmitRejected):
            self._drop(position, trigger_id, sell)
        else:
            self.unanswered += 1

    def _expire(self, now_ns: int) -> None:
        for position, sells in list(self._sells.items()):
            for tid, s in list(sells.items()):
                if now_ns - s.sent_ns > self.max_age_ns:
                    self._drop(position, tid, s)

    def _drop(self, position: tuple[str, str], trigger_id: str, sell: _Sell) -> None:
        sells = self._sells.get(position)
        if sells is not None and sells.get(trigger_id) is sell:
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
