"""Fills kept but not booked (of the other venue than their position's open life: ``fill_store``), reported once the
booking that found them committed, once each: logged, counted (``executor.fills_of_other_venue``) and alerted
(``FILL_NOT_BOOKED``). A booking rolled back reports nothing (its retry finds them again); one whose commit's
answer was lost keeps them until a later booking of the same fills tells whether it committed (it found them stored:
reported then) or not (it inserted them now, and found again what it reports)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry import metrics

from common.alerts import AlertKind, Severity, raise_alert
from common.decimals import fmt
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket

log = logging.getLogger(__name__)
_OTHER_VENUE = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.fills_of_other_venue", description="Fills not booked: their position's open life is of the other "
                                                 "venue, by venue")
_exported = False
UNSURE_MAX = 10_000  # fills kept of bookings whose commit's answer was lost (the oldest go first)


def export() -> None:
    """Export the counter from the first booking on (an alerting rule reads it)."""
    global _exported
    if not _exported:
        _exported = True
        for venue in ("INSIDERS", "PAPER"):
            _OTHER_VENUE.add(0, {"venue": venue})


@dataclass(frozen=True, slots=True)
class NotBooked:
    """A fill kept and not booked: its position's open life is held in ``position_venue``."""

    ticket: Ticket
    booking: Booking
    position_venue: str


@dataclass
class Aside:
    """What one booking transaction leaves for after its commit: the fills it did not book, and the ids of those it
    inserted now (the others were stored already)."""

    not_booked: list[NotBooked] = field(default_factory=list)
    new: set[str] = field(default_factory=set)


def report(items: Iterable[NotBooked]) -> None:
    """Log, count and alert each of ``items``."""
    for n in items:
        t, b = n.ticket, n.booking
        wallet, asset = t.order.follower_wallet_id, t.order.asset_id
        _OTHER_VENUE.add(1, {"venue": t.venue})
        log.error("fill not booked: its position is held in the other venue", extra={
            "client_order_id": t.client_order_id, "fill_id": b.fill_id, "venue": t.venue,
            "position_venue": n.position_venue, "follower_wallet_id": wallet, "asset_id": asset,
            "size": str(b.size)})
        raise_alert(AlertKind.FILL_NOT_BOOKED, f"fill_not_booked:{t.venue}",
                    f"a fill of {fmt(b.size)} shares of order {t.client_order_id} at {t.venue} is not booked: "
                    f"wallet {wallet} holds the token in the {n.position_venue} venue; book it by hand",
                    dedupe_id=f"fill_not_booked:{b.fill_id}", severity=Severity.CRITICAL,
                    client_order_id=t.client_order_id, fill_id=b.fill_id, venue=t.venue,
                    position_venue=n.position_venue, follower_wallet_id=wallet, asset_id=asset, size=fmt(b.size),
                    side=t.side)


class Unbooked:
    """Reports the fills bookings did not book once each booking is known to have committed (see the module)."""

    def __init__(self) -> None:
        self.unsure: dict[str, NotBooked] = {}  # fill id → found by a booking whose commit's answer was lost

    def lost(self, aside: Aside) -> None:
        """The booking that set ``aside`` aside ended unanswered: it may have committed."""
        self.unsure.update((n.booking.fill_id, n) for n in aside.not_booked)
        for fill_id in list(self.unsure)[:max(0, len(self.unsure) - UNSURE_MAX)]:
            del self.unsure[fill_id]

    def committed(self, aside: Aside, fill_ids: Iterable[str]) -> None:
        """The booking of ``fill_ids`` that set ``aside`` aside committed: report what it did not book, and what an
        unanswered one did not book of the fills it found stored."""
        found = list(aside.not_booked)
        for fill_id in fill_ids:
            earlier = self.unsure.pop(fill_id, None)
            if earlier is not None and fill_id not in aside.new:
                found.append(earlier)
        report(found)
