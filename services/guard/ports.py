"""The small interfaces guard's runners talk to (implemented in ``adapters``, faked in unit tests).

The coordinator, the firer, the order flow and the perf monitor take these, never an adapter class, so a test
can hand them a fake; ``app`` is where the real adapters are built and passed in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from common.marketstate import BookSnapshot, FeedBeat, MarketInfo
from services.guard.domain.exit_plans import CopyFill, ExitsChange
from services.guard.domain.fire_records import FireDecision, FireFacts, FireResult
from services.guard.domain.perf_rules import Basis, Decision, DecisionRow, FillRow, Pnl, StatsRow, SubscriptionRules
from services.guard.domain.tick_view import TickInfo
from services.guard.domain.trigger_model import Move, TriggerSpec
from services.guard.domain.trigger_rows import TriggerRow
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

TickBatch = tuple[str, list[mpb.PriceTick]]  # (cursor after the batch, its ticks in log order)
OpenTicks = Callable[[str], AsyncIterator[TickBatch]]  # a tick source: open_stream(after_cursor)


class SubmitRejected(Exception):
    """The executor refused the order for good (a retry with the same id would be refused again)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class PerfActionRefused(Exception):
    """Control refused a perf action for good (unknown or stopped subscription, bad input); ``stale``: because
    the rules it was made under are no longer the subscription's (evaluate again, under the current ones)."""

    def __init__(self, message: str, *, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


class Executor(Protocol):
    """Where SELLs go."""

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        """Place ``order`` once (idempotent by client order id). Raises SubmitRejected, or another
        exception for a transient failure (retry with the same order)."""


class Control(Protocol):
    """The internal perf-action RPC."""

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str, decided_under: Basis | None = None) -> bool:
        """Apply a decision made under ``decided_under`` (None: not checked); True when applied now, False when
        applied before. Raises PerfActionRefused, or another exception for a transient failure."""


class Markets(Protocol):
    """Market rules and marks kept in Redis by ingest."""

    async def market(self, asset_id: str) -> MarketInfo | None:
        """Tick size, minimum order size... of an asset (None when unknown)."""

    async def marks(self, asset_ids: Iterable[str]) -> dict[str, Decimal]:
        """Mark prices (mid, else best bid, else last trade) of the assets that have a book."""

    async def fresh_marks(self, asset_ids: Iterable[str], max_age_ms: int) -> tuple[dict[str, Decimal], set[str]]:
        """:meth:`marks`, and which of those assets have a fresh book (``BookSnapshot.fresh`` within
        ``max_age_ms`` against the book feed's beat)."""


class MarketCache(Markets, Protocol):
    """:class:`Markets` with the cache the coordinator manages and the stored books it catches up from."""

    async def prefetch(self, asset_ids: Iterable[str]) -> int:
        """Cache the market info of many assets (start-up); returns how many exist."""

    def forget(self, asset_id: str) -> None:
        """Drop a cached entry (the tick size changed)."""

    async def books_and_feed(self, asset_ids: Iterable[str]) -> tuple[dict[str, BookSnapshot], FeedBeat | None]:
        """Stored books of the assets that have one, and the book feed's beat (to judge each book's freshness)."""


class Kickable(Protocol):
    """A background loop asked to run soon (the event outbox, the watch set)."""

    def kick(self) -> None:
        """Ask for a run soon."""


class FireRecords(Protocol):
    """The trigger rows a fire reads, records and settles (PostgreSQL: the final word in any race)."""

    async def fire(self, trigger_id: str, siblings: Sequence[str], mark: Decimal, tick: TickInfo,
                   decide: Callable[[TriggerRow, FireFacts], FireDecision],
                   on_decided: Callable[[FireDecision], object] | None = None,
                   before_decide: Awaitable[object] | None = None) -> FireResult:
        """Lock the position, decide with ``decide``, record the decision and cancel OCO siblings, atomically."""

    async def settle(self, trigger_id: str, order_id: str, move: Move | None, reason: str, filled: Decimal,
                     avg_price: Decimal) -> TriggerRow | None:
        """Apply an order event to a FIRED trigger: DONE / FAILED, or just the fill so far; None when not FIRED."""

    async def mark_submitted(self, items: Sequence[tuple[str, str]]) -> None:
        """The executor has these SELLs ((trigger id, order id))."""

    async def unsubmitted(self) -> list[TriggerRow]:
        """FIRED triggers whose SELL the executor may not have."""

    async def ordered(self, order_ids: Sequence[str]) -> set[str]:
        """Those of ``order_ids`` (client order ids) the executor has an order of."""


class TriggerRows(FireRecords, Protocol):
    """Every trigger-row read and write of the coordinator and the order flow."""

    async def load_armed(self) -> list[TriggerSpec]:
        """Every ARMED trigger as an engine spec (the start-up load)."""

    async def held_ids(self) -> list[str]:
        """ARMED triggers recorded as held on a stale book."""

    async def get(self, trigger_id: str) -> TriggerRow | None:
        """One trigger."""

    async def get_many(self, trigger_ids: Iterable[str], *, chunk: int = 1000) -> dict[str, TriggerRow]:
        """Several triggers by id, in statements of ``chunk`` ids (those not found are left out)."""

    async def find_by_order(self, trigger_id: str, order_id: str) -> TriggerRow | None:
        """The trigger that sent ``order_id``."""

    async def settle_many(self, items: Sequence[tuple[str, str, Move | None, str, Decimal, Decimal]]
                          ) -> list[TriggerRow | None]:
        """:meth:`settle` for several order events, in order, in one transaction."""

    async def cancel_assets(self, asset_ids: Iterable[str], reason: str, tick: TickInfo) -> list[TriggerRow]:
        """Cancel every ARMED trigger on these assets (market resolution)."""

    async def set_holds(self, changes: Sequence[tuple[Sequence[str], bool, TickInfo]]) -> int:
        """Hold (stale book) or release ARMED triggers, in order, in one transaction; returns rows changed."""

    async def save_marks(self, marks: Sequence[tuple[Decimal, list[str]]], *, chunk: int = 500) -> None:
        """Persist trailing high-water marks (never lowered)."""

    async def record_observed(self, row: TriggerRow, kind: str, reason: str) -> None:
        """Write the event of a change another service made."""


class RecentlyArmed(Protocol):
    """The newest ARMED triggers (``unwatched``)."""

    async def created(self, since: datetime, until: datetime) -> list[str]:
        """Ids of the ARMED triggers created at ``since`` or later, before ``until``."""


class CopyExits(Protocol):
    """A copied position's exits group and its COPY triggers."""

    async def on_buy_fill(self, fill: CopyFill, tick_size: Decimal) -> ExitsChange:
        """Register the subscription's exits for the position the fill opened, or resize the open ones."""

    async def on_buy_fills_quick(self, fills: Sequence[CopyFill]) -> list[ExitsChange | None]:
        """The cheap cases of a batch of fills (None: that fill needs :meth:`on_buy_fill`)."""

    async def on_sell_fill(self, follower_wallet_id: str, asset_id: str) -> ExitsChange:
        """After a SELL filled: cancel the exits of a position that is gone (or say EXITS_USED)."""

    async def renew_used(self, follower_wallet_id: str, asset_id: str, tick_size: Decimal) -> ExitsChange:
        """Renew a used-up exits group for the shares still held."""


class PerfRecords(Protocol):
    """Subscriptions with perf rules, their fills and stats, and guard's perf decisions."""

    async def active_subscriptions(self) -> list[SubscriptionRules]:
        """ACTIVE subscriptions whose perf rules are set."""

    async def stats_rows(self) -> list[StatsRow]:
        """Subscriptions with booked fills, whatever their state."""

    async def save_unrealized(self, values: list[tuple[str, Decimal]]) -> int:
        """Write the subscriptions' unrealized PnL; returns the rows changed."""

    async def fills_since_many(self, seen: dict[str, str | None]) -> tuple[dict[str, list[FillRow]], str]:
        """For each subscription (id → the snapshot of its last read, None: never read), the fills that snapshot
        could not see (all when None), in one read; and this read's snapshot."""

    async def decisions(self, subscription_id: str) -> list[DecisionRow]:
        """Decisions recorded for a subscription, oldest first."""

    async def unapplied(self) -> list[DecisionRow]:
        """Decisions recorded but not yet acknowledged by control."""

    async def record(self, d: Decision) -> bool:
        """Record a decision before acting on it; False when recorded before."""

    async def record_resumed(self, decision_id: str, subscription_id: str, pnl: Pnl, threshold_usd: Decimal,
                             basis: Basis | None = None) -> None:
        """Record that a loss-stopped subscription is ACTIVE again, and its PnL then (in ``basis``'s mode)."""

    async def settle(self, decision_id: str, applied: bool, error: str = "") -> None:
        """Control answered: applied (or applied before), or refused for good with ``error``."""
