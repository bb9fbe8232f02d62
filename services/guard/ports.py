"""The small interfaces guard's core talks to (implemented in ``adapters``, faked in unit tests)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from common.marketstate import MarketInfo
from tradingtools.execution.v1 import execution_pb2 as epb


class SubmitRejected(Exception):
    """The executor refused the order for good (a retry with the same id would be refused again)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class PerfActionRefused(Exception):
    """Control refused a perf action for good (unknown or stopped subscription, bad input)."""


class Executor(Protocol):
    """Where SELLs go."""

    async def submit(self, order: epb.Order) -> epb.SubmitOrderResponse:
        """Place ``order`` once (idempotent by client order id). Raises SubmitRejected, or another
        exception for a transient failure (retry with the same order)."""


class Control(Protocol):
    """The internal perf-action RPC."""

    async def apply_perf_action(self, *, subscription_id: str, action: str, multiplier: Decimal | None,
                                reason: str, decision_id: str) -> bool:
        """Apply a decision; True when applied now, False when applied before. Raises PerfActionRefused,
        or another exception for a transient failure."""


class Markets(Protocol):
    """Market rules and marks kept in Redis by ingest."""

    async def market(self, asset_id: str) -> MarketInfo | None:
        """Tick size, minimum order size... of an asset (None when unknown)."""

    async def marks(self, asset_ids: Iterable[str]) -> dict[str, Decimal]:
        """Mark prices (mid, else best bid, else last trade) of the assets that have a book."""
