"""Venue answers screened before they are read into events: one reporting a fill the order cannot have made
(:func:`.domain.answer_policy.implausible_fill`) is never booked. It reads as an unreadable answer (a ``protocol``
error coded ``VENUE_IMPLAUSIBLE_FILL``: the order is settled by status query, a placed one queried again), and is
logged with the order's ids and counted (``executor.implausible_answers``, by venue and call). The first such answer
about an order raises VENUE_ANSWER_IMPLAUSIBLE (once per order: a stuck order is asked about once a second)."""

from __future__ import annotations

import logging
from collections import OrderedDict

from opentelemetry import metrics

from services.executor.alerting import venue_answer_implausible
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import IMPLAUSIBLE_FILL, implausible_fill
from services.executor.domain.ticket import Ticket

log = logging.getLogger(__name__)
_IMPLAUSIBLE = metrics.get_meter("tradingtools.executor").create_counter(
    "executor.implausible_answers", description="Venue answers reporting a fill the order cannot have made (not "
                                                "booked), by venue and call")
ALERTED_MAX = 10_000  # orders remembered as alerted on (the most recent)


class OncePer:
    """Which keys were seen, of the ``maxlen`` most recent (the oldest forgotten first)."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first(self, key: str) -> bool:
        """Whether ``key`` is new (it is remembered from now on)."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.maxlen:
            self._seen.popitem(last=False)
        return True


_ALERTED = OncePer(ALERTED_MAX)
_EXPORTED: set[tuple[str, str]] = set()  # (venue, call) series exported (an alerting rule reads them)


def screened(t: Ticket, result: v.VenueResult, call: str) -> v.VenueResult:
    """``result`` of a venue ``call`` (post, query, cancel) about ``t``, or the error it reads as when implausible."""
    if (t.venue, call) not in _EXPORTED:
        _EXPORTED.add((t.venue, call))
        _IMPLAUSIBLE.add(0, {"venue": t.venue, "call": call})
    if not isinstance(result, v.VenueOrder):
        return result
    why = implausible_fill(t.request, result)
    if not why:
        return result
    _IMPLAUSIBLE.add(1, {"venue": t.venue, "call": call})
    log.error("venue answer not booked: it reports a fill the order cannot have made", extra={
        "client_order_id": t.client_order_id, "venue_order_id": result.order_id, "venue": t.venue, "call": call,
        "status": result.status, "detail": why[:300]})
    if _ALERTED.first(t.client_order_id):
        venue_answer_implausible(t, result, call, why)
    return v.VenueError("protocol", 200, IMPLAUSIBLE_FILL, why[:300])
