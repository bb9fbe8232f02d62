"""What the executor knows about one order while it runs (the proto, the venue request, timings): the Ticket."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.decimals import ZERO
from services.executor.domain.venue_orders import PlaceRequest
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

INSIDERS = "INSIDERS"
PAPER = "PAPER"

ORDER_TYPES = {epb.ORDER_TYPE_FOK: "FOK", epb.ORDER_TYPE_FAK: "FAK", epb.ORDER_TYPE_GTC: "GTC"}
ORIGINS = {epb.ORDER_ORIGIN_COPY: "COPY", epb.ORDER_ORIGIN_TRIGGER: "TRIGGER", epb.ORDER_ORIGIN_MANUAL: "MANUAL"}
VENUE_ENUM = {INSIDERS: cpb.VENUE_INSIDERS, PAPER: cpb.VENUE_PAPER}


@dataclass(slots=True)
class Ticket:
    """One order in the executor: the Order as received, where it goes, and run-time facts."""

    order: epb.Order
    venue: str  # INSIDERS | PAPER
    request: PlaceRequest | None  # None when the order was refused before any venue call
    created_ns: int
    post_sent_ns: int = 0  # when the first POST left (0 until then)
    fee_booked: Decimal = ZERO  # fee shares already booked in fills
    notional_booked: Decimal = ZERO  # USD of the fills already booked
    arrival_ns: int = 0  # when this executor received it (stream order within a batch); 0 when unknown

    @property
    def client_order_id(self) -> str:
        """Client order id (the venue's Idempotency-Key)."""
        return self.order.client_order_id

    @property
    def buying(self) -> bool:
        """True for a BUY."""
        return self.order.side == cpb.SIDE_BUY

    @property
    def side(self) -> str:
        """BUY or SELL."""
        return "BUY" if self.buying else "SELL"

    @property
    def order_type(self) -> str:
        """FOK, FAK or GTC (FAK when unset)."""
        return ORDER_TYPES.get(self.order.order_type, "FAK")

    @property
    def origin(self) -> str:
        """COPY, TRIGGER or MANUAL."""
        return ORIGINS.get(self.order.origin, "MANUAL")

    def copy_latency_ms(self) -> Decimal | None:
        """Leader frame received → first POST sent, in ms (None when either time is unknown)."""
        if not self.post_sent_ns or not self.order.received_time_ns:
            return None
        return (Decimal(self.post_sent_ns - self.order.received_time_ns) / Decimal(1_000_000)).quantize(
            Decimal("0.001"))
