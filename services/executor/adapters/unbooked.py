"""Fills kept but not booked (of the other venue than their position's open life: ``fill_store``), reported once the
booking that found them committed, once each: logged, counted (``executor.fills_of_other_venue``) and alerted
(``FILL_NOT_BOOKED``).

The booking's transaction notes them in ``fills_not_booked`` (:func:`note`: one statement, only when it found some;
migration 0832), and what is reported is read from there: the rows not reported yet, marked reported after. So a
booking rolled back reports nothing (its retry finds the fills again), and one whose commit's answer was lost is
reported by the first of: a later booking of the same fills (their ids are kept in memory until then), the sweep at
the executor's next start, or its periodic sweep (which also takes what a report after a commit failed to read or
mark). A sweep reports and marks in one transaction, the notes it read locked to its end: another sweep at the same
time (the booking's report and a start's, or the periodic one) leaves them to it. A report whose mark was lost is made
again, under the same ``dedupe_id``, which the alert deliverer sends once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from opentelemetry import metrics
from psycopg import AsyncCursor
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from common.alerts import AlertKind, Severity, raise_alert
from common.decimals import fmt
from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import Ticket

log = logging.getLogger(__name__)
_OTHER_VENUE = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.fills_of_other_venue", description="Fills not booked: their position's open life is of the other "
                                                 "venue, by venue")
_exported = False
UNSURE_MAX = 10_000  # ids of fills kept of bookings whose commit's answer was lost (the oldest go first)
SWEEP_S = 30.0  # the noted fills nobody reported for this long are reported this often
SWEEP_BATCH = 1000

_NOTE = """
INSERT INTO fills_not_booked (fill_id, position_venue, reported_at)
SELECT r.id, r.venue, CASE WHEN %s THEN now() END FROM unnest(%s::text[], %s::text[]) AS r(id, venue)
ON CONFLICT (fill_id) DO NOTHING
"""
_UNREPORTED = """
SELECT n.fill_id, n.position_venue, f.order_id, f.venue, f.follower_wallet_id, f.asset_id, f.size, f.side
FROM fills_not_booked n JOIN fills f ON f.id = n.fill_id
WHERE n.reported_at IS NULL AND {which}
ORDER BY n.found_at LIMIT %s
FOR UPDATE OF n SKIP LOCKED
"""
_UNREPORTED_OF = _UNREPORTED.format(which="n.fill_id = ANY(%s)")
_UNREPORTED_SINCE = _UNREPORTED.format(which="n.found_at <= now() - make_interval(secs => %s)")
_MARK = "UPDATE fills_not_booked SET reported_at = now() WHERE fill_id = ANY(%s) AND reported_at IS NULL"


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

    def row(self) -> dict[str, Any]:
        """As :data:`_UNREPORTED` reads it."""
        t, b = self.ticket, self.booking
        return {"fill_id": b.fill_id, "position_venue": self.position_venue, "order_id": t.client_order_id,
                "venue": t.venue, "follower_wallet_id": t.order.follower_wallet_id, "asset_id": t.order.asset_id,
                "size": b.size, "side": t.side}


@dataclass
class Aside:
    """What one booking transaction leaves for after its commit: the fills it did not book, and the ids of those it
    inserted now (the others were stored already)."""

    not_booked: list[NotBooked] = field(default_factory=list)
    new: set[str] = field(default_factory=set)


async def note(cur: AsyncCursor[DictRow], items: list[NotBooked], reported: bool = False) -> None:
    """Note ``items`` (as ``reported`` already, or not) in the cursor's transaction; nothing without any."""
    if items:
        await cur.execute(_NOTE, (reported, [n.booking.fill_id for n in items], [n.position_venue for n in items]))


def report(rows: Iterable[Mapping[str, Any]]) -> None:
    """Log, count and alert each fill of ``rows`` (:data:`_UNREPORTED`'s)."""
    for r in rows:
        coid, fill_id, venue, held = r["order_id"], r["fill_id"], r["venue"], r["position_venue"]
        wallet, asset, size = r["follower_wallet_id"], r["asset_id"], fmt(r["size"])
        _OTHER_VENUE.add(1, {"venue": venue})
        log.error("fill not booked: its position is held in the other venue", extra={
            "client_order_id": coid, "fill_id": fill_id, "venue": venue, "position_venue": held,
            "follower_wallet_id": wallet, "asset_id": asset, "size": size})
        raise_alert(AlertKind.FILL_NOT_BOOKED, f"fill_not_booked:{venue}",
                    f"a fill of {size} shares of order {coid} at {venue} is not booked: wallet {wallet} holds the "
                    f"token in the {held} venue; book it by hand",
                    dedupe_id=f"fill_not_booked:{fill_id}", severity=Severity.CRITICAL, client_order_id=coid,
                    fill_id=fill_id, venue=venue, position_venue=held, follower_wallet_id=wallet, asset_id=asset,
                    size=size, side=r["side"])


class Unbooked:
    """Reports the fills bookings did not book once each booking is known to have committed (see the module)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self.unsure: dict[str, None] = {}  # ids of fills found by a booking whose commit's answer was lost

    def lost(self, aside: Aside) -> None:
        """The booking that set ``aside`` aside ended unanswered: it may have committed."""
        self.unsure.update(dict.fromkeys(n.booking.fill_id for n in aside.not_booked))
        for fill_id in list(self.unsure)[:max(0, len(self.unsure) - UNSURE_MAX)]:
            del self.unsure[fill_id]

    async def committed(self, aside: Aside, fill_ids: Iterable[str]) -> None:
        """The booking of ``fill_ids`` that set ``aside`` aside committed: report what it did not book, and what an
        unanswered one did not book of the fills it found stored."""
        ids = [n.booking.fill_id for n in aside.not_booked]
        if self.unsure:
            for fill_id in fill_ids:
                if fill_id in self.unsure:
                    del self.unsure[fill_id]
                    if fill_id not in aside.new:  # else it found them itself: that one rolled back
                        ids.append(fill_id)
        if ids:
            await self.sweep(ids)

    async def sweep(self, ids: list[str] | None = None, min_age_s: float = 0.0) -> None:
        """Report the noted fills not reported yet (of ``ids``; else those noted ``min_age_s`` ago or more), then
        mark them reported. A failure is logged: the next sweep reports what is left."""
        try:
            while True:
                async with self.pool.connection() as conn, conn.transaction():
                    cur = await (conn.execute(_UNREPORTED_OF, (ids, SWEEP_BATCH)) if ids is not None
                                 else conn.execute(_UNREPORTED_SINCE, (min_age_s, SWEEP_BATCH)))
                    rows = await cur.fetchall()
                    if rows:
                        report(rows)
                        await conn.execute(_MARK, ([r["fill_id"] for r in rows],))
                if len(rows) < SWEEP_BATCH:
                    return
        except psycopg.Error:
            log.warning("fills not booked not all reported: the next sweep reports the rest", exc_info=True)

    async def run(self, interval_s: float = SWEEP_S) -> None:
        """Every ``interval_s``, report the fills noted that long ago or more and not reported yet."""
        while True:
            await asyncio.sleep(interval_s)
            await self.sweep(min_age_s=interval_s)
