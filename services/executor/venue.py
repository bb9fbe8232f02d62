"""The venue port: what the executor needs from an execution venue, and the values it returns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from common.decimals import ZERO

# Venue statuses (docs/insiders-api.md): POST answers matched|live|delayed|unmatched;
# GET adds mined|confirmed|cancelled|failed.
LIVE = "live"
MATCHED = "matched"
DELAYED = "delayed"
UNMATCHED = "unmatched"
MINED = "mined"
CONFIRMED = "confirmed"
CANCELLED = "cancelled"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PlaceRequest:
    """One order as the venue takes it (the body of ``POST /v1/orders``)."""

    client_order_id: str
    user_id: str
    wallet_id: str
    proxy: str
    token_id: str
    side: str  # "BUY" | "SELL"
    order_type: str  # "FOK" | "FAK" | "GTC"
    amount_usd: Decimal | None
    size: Decimal | None
    limit_price: Decimal
    neg_risk: bool = False


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """The venue's view of an order: status and cumulative fill."""

    order_id: str
    client_order_id: str
    status: str
    filled_size: Decimal = ZERO
    avg_price: Decimal = ZERO
    making_amount: Decimal = ZERO
    taking_amount: Decimal = ZERO
    fee_shares: Decimal = ZERO
    tx_hashes: tuple[str, ...] = field(default_factory=tuple)


def fee_shares(order: VenueOrder, *, buying: bool) -> Decimal:
    """Shares the venue kept as the fee of an order so far (cumulative): ``feeShares`` when the answer says;
    else, on a BUY, what was filled beyond what was delivered (``takingAmount`` is the shares received)."""
    if order.fee_shares > 0 or not buying:
        return order.fee_shares
    if ZERO < order.taking_amount < order.filled_size:
        return order.filled_size - order.taking_amount
    return ZERO


@dataclass(frozen=True, slots=True)
class VenueError:
    """A call that did not return an order.

    ``kind``: ``http`` (an answer with ``http_status``), ``timeout`` (no answer in time),
    ``disconnect`` (the connection dropped mid-call), ``connect`` (never connected: nothing sent),
    ``protocol`` (a 200 that does not read as an order).
    """

    kind: str
    http_status: int = 0
    code: str = ""
    message: str = ""


VenueResult = VenueOrder | VenueError


class Venue(Protocol):
    """An execution venue (the Insiders API, or the paper venue)."""

    name: str

    async def place(self, request: PlaceRequest, *, traceparent: str = "") -> VenueResult:
        """Submit an order, idempotent by its client order id."""

    async def query_by_client_id(self, client_order_id: str) -> VenueResult:
        """The order with this client order id (``404 ORDER_NOT_FOUND`` as a VenueError)."""

    async def query(self, venue_order_id: str) -> VenueResult:
        """The order with this venue order id."""

    async def cancel(self, venue_order_id: str) -> VenueResult:
        """Cancel a resting order."""

    async def close(self) -> None:
        """Release connections."""


async def safe(call: Awaitable[VenueResult]) -> VenueResult:
    """The outcome of a venue call; an exception (an adapter bug, a dropped connection) becomes a
    ``disconnect`` error to retry later, never a crash of the caller."""
    try:
        return await call
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing query is retried later
        return VenueError("disconnect", 0, "", repr(exc)[:300])
