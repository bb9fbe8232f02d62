"""The executor's ports: what its runners need from the venues (typing.Protocol), with the values only a port
returns. The adapters implement them: :mod:`.adapters.insiders_api` (every port) and :mod:`.adapters.paper_venue`
(:class:`Venue`); the order request and the venue's view of an order are domain values
(:mod:`.domain.venue_orders`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from services.executor.domain.venue_orders import PlaceRequest, VenueError, VenueResult


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


@runtime_checkable
class AnswerHolder(Protocol):
    """A venue client that can keep answers unread while a burst is written."""

    def hold_answers(self) -> None:
        """Start holding answers."""

    def release_answers(self) -> None:
        """Process what was held and stop holding."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON call's outcome: ``status`` 200 with ``body``, another HTTP status with the venue's ``code`` and
    ``message``, or no answer (``status`` 0, ``kind`` timeout / connect / disconnect / protocol)."""

    status: int
    body: dict[str, Any] | None = None
    kind: str = "http"
    code: str = ""
    message: str = ""


class RedeemApi(Protocol):
    """The venue calls redemption needs (the Insiders API adapter)."""

    async def redeem(self, key: str, wallet_id: str, condition_id: str, neg_risk: bool,
                     amounts: Sequence[Decimal]) -> Answer:
        """``POST /v1/redeem``."""

    async def redemption(self, redeem_id: str) -> Answer:
        """``GET /v1/redeem/{redeemId}``."""


class PositionsApi(Protocol):
    """The venue call reconciliation needs."""

    async def positions(self, wallet_id: str) -> Answer:
        """``GET /v1/wallets/{walletId}/positions``."""
