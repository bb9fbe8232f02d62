"""Status queries of placed orders (the tracker's poll): the venue's answer read into lifecycle events.

A placed order the venue answers ``ORDER_NOT_FOUND`` for by its venue order id is looked up by its client
order id too; found neither way, the query counts as a miss. Misses in a row end the order LOST once
there were enough of them over long enough (:func:`.domain.answer_policy.decide_placed_missing`): without that an order
the venue dropped was queried for ever and held its reservation (and so its follower's risk headroom)
for good. Before LOST, the order is cancelled by its venue order id: a venue whose lookups missed an order
it still has ends it there (CANCELLED with what filled, or the status it reached) instead of leaving it
resting, able to fill, after its reservation was released; only a 404 to the cancel too ends it LOST.
Misses are counted in memory: a restart counts afresh, which only waits longer.

A venue that finds the order by its client order id under another venue order id is asked by that id
from then on (in memory; the order's row and events keep the id its POST was answered with).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from common.lease import unleased
from services.executor.burst_gate import BurstGate
from services.executor.domain import order_lifecycle as lc
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import (
    Missing,
    Verdict,
    classify,
    decide_placed_missing,
    decide_status,
    missed,
)
from services.executor.domain.ticket import Ticket
from services.executor.ports import Venue, safe
from services.executor.screening import screened
from services.executor.unlisted_statuses import UnlistedStatuses

log = logging.getLogger(__name__)

Transition = Callable[[Ticket, lc.OrderLife, list[lc.Event], v.VenueOrder | None], Awaitable[lc.OrderLife]]


class PlacedQueries:
    """Queries the status of PLACED and PARTIALLY_FILLED orders and applies what the answers imply."""

    def __init__(self, venues: dict[str, Venue], burst: BurstGate, transition: Transition, *, lost_after: int,
                 lost_after_s: float, clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
                 lease_confirmed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.venues = venues
        self.lease_confirmed = lease_confirmed or unleased  # awaited before a cancel (see OrderRunner)
        self.burst = burst
        self.transition = transition
        self.lost_after = lost_after
        self.lost_after_s = lost_after_s
        self.clock_ms = clock_ms
        self._missing: dict[str, Missing] = {}
        self._renamed: dict[str, str] = {}  # client order id -> the venue order id the venue now answers with
        self.unlisted = UnlistedStatuses(venues, alert_after_s=lost_after_s, clock_ms=clock_ms)

    def __len__(self) -> int:
        return len(self._missing)

    def forget(self, client_order_id: str) -> None:
        """Drop what is known of an order that is no longer queried here (terminal, or given up on)."""
        self._missing.pop(client_order_id, None)
        self._renamed.pop(client_order_id, None)
        self.unlisted.forget(client_order_id)

    async def poll(self, t: Ticket, life: lc.OrderLife) -> tuple[lc.OrderLife, bool]:
        """One status query of a placed order: its state after the answer, and whether it changed."""
        await self.burst.wait()  # status queries yield to a fan-out's POSTs
        venue, coid = self.venues[t.venue], t.client_order_id
        result: v.VenueResult
        venue_order_id = self._renamed.get(coid, life.venue_order_id)
        if venue_order_id:
            result = await safe(venue.query(venue_order_id))
            if classify(result).verdict is Verdict.NOT_FOUND:
                result = await safe(venue.query_by_client_id(coid))
        else:
            result = await safe(venue.query_by_client_id(coid))
        result = screened(t, result, "query")
        if isinstance(result, v.VenueOrder):
            self._missing.pop(coid, None)
            self.unlisted.seen(t, result, "query")
            if result.order_id and result.order_id != venue_order_id:
                log.warning("placed order found under another venue order id", extra={
                    "client_order_id": coid, "venue_order_id": venue_order_id, "now": result.order_id})
                self._renamed[coid] = result.order_id
            events = decide_status(life, result)
            if events:
                return await self.transition(t, life, events, result), True
            return life, False
        if classify(result).verdict is not Verdict.NOT_FOUND:
            return life, False  # a transient error says nothing of the order
        now_ms = self.clock_ms()
        missing = self._missing[coid] = missed(self._missing.get(coid), now_ms)
        log.warning("placed order not found at the venue", extra={
            "client_order_id": coid, "venue_order_id": life.venue_order_id, "misses": missing.count})
        lost = decide_placed_missing(missing, now_ms, lost_after=self.lost_after, lost_after_s=self.lost_after_s)
        if not lost:
            return life, False
        if venue_order_id:
            # the last word before LOST: a cancel, which ends the order if the venue has it after all (it must
            # not rest there, able to fill, once its reservation is released) and answers with what it filled
            await self.lease_confirmed()
            result = screened(t, await safe(venue.cancel(venue_order_id)), "cancel")
            if isinstance(result, v.VenueOrder):
                self._missing.pop(coid, None)
                self.unlisted.seen(t, result, "cancel")
                log.warning("placed order the lookups missed answered its cancel", extra={
                    "client_order_id": coid, "venue_order_id": venue_order_id, "status": result.status})
                events = decide_status(life, result)
                if events:
                    return await self.transition(t, life, events, result), True
                return life, False
            if classify(result).verdict is not Verdict.NOT_FOUND:
                return life, False  # a transient error: the next poll decides again
        self._missing.pop(coid, None)
        return await self.transition(t, life, lost, None), True
