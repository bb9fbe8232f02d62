"""What an execution venue takes and returns: the order request, the venue's view of an order, its errors
(values only; the port itself is :class:`services.executor.ports.Venue`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

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
LISTED = frozenset({LIVE, MATCHED, DELAYED, UNMATCHED, MINED, CONFIRMED, CANCELLED, FAILED})
# Another spelling of a listed word that cannot mean anything else (Polymarket's own order status is CANCELED).
ALIASES = {"canceled": CANCELLED}
LOWEST_PRICE = Decimal("0.0001")  # the finest tick of any market: no share trades for less


def canonical_status(raw: str) -> str:
    """A venue's status word as the contract spells it (trimmed, lower-cased, an alias of :data:`ALIASES` read as
    its word); any other word is kept as it is: unlisted, it is never read as a state. For the adapter, before it
    checks that a final status carries ``filledSize`` (read as 0 it would end a filled order unfilled)."""
    word = raw.strip().lower()
    return ALIASES.get(word, word)


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
