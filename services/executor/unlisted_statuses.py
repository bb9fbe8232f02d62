"""Venue answers about an order with a status word the contract does not list (``expired``, ``RETRYING``, ``canceled``
when the adapter does not read it as ``cancelled``): the order is never ended on a guess, it is asked again, but such
answers are counted (``executor.unlisted_statuses``, by venue and call, exported from the start), each word is logged
once per order, and an order answered only so for ``alert_after_s`` raises VENUE_ANSWER_IMPLAUSIBLE (once per order):
it holds its reservation, and may hold a fill nobody booked, until the venue answers a listed word or an operator
ends it by hand. In memory: a restart counts afresh, which only waits longer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from opentelemetry import metrics

from services.executor.alerting import venue_status_unlisted
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import Unlisted, unlisted_since, unlisted_too_long
from services.executor.domain.ticket import Ticket

log = logging.getLogger(__name__)
CALLS = ("post", "query", "cancel")
DEFAULT_ALERT_AFTER_S = 300.0  # when the placed orders' LOST window is 0 (never LOST): an alert gives nothing up
WORDS_LOGGED_MAX = 8  # words logged per order (a venue may put a counter in the word)


class UnlistedStatuses:
    """Watches the status words of one process's placed orders (:meth:`seen` each answer, :meth:`forget` an order
    that is no longer asked about)."""

    def __init__(self, venues: Iterable[str], *, alert_after_s: float,
                 clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
                 meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("tradingtools.executor")
        self._counted = meter.create_counter(
            "executor.unlisted_statuses", description="Venue answers about an order with a status word the contract "
                                                      "does not list (nothing booked, the order asked again), by "
                                                      "venue and call")
        for venue in venues:  # exported from the start: an alerting rule reads them
            for call in CALLS:
                self._counted.add(0, {"venue": venue, "call": call})
        self.alert_after_s = alert_after_s if alert_after_s > 0 else DEFAULT_ALERT_AFTER_S
        self.clock_ms = clock_ms
        self._streaks: dict[str, Unlisted] = {}
        self._logged: dict[str, set[str]] = {}
        self._alerted: set[str] = set()

    def __len__(self) -> int:
        return len(self._streaks)

    def seen(self, t: Ticket, answer: v.VenueOrder, call: str) -> None:
        """Note one answer about ``t`` (to a ``post``, ``query`` or ``cancel``)."""
        coid = t.client_order_id
        before = self._streaks.get(coid)
        if before is None and answer.status in v.LISTED:
            return
        now_ms = self.clock_ms()
        streak = unlisted_since(before, answer.status, now_ms)
        if streak is None:
            del self._streaks[coid]
            return
        self._streaks[coid] = streak
        self._counted.add(1, {"venue": t.venue, "call": call})
        words = self._logged.setdefault(coid, set())
        if answer.status not in words and len(words) < WORDS_LOGGED_MAX:
            words.add(answer.status)
            log.warning("venue answered a status word the contract does not list: the order is asked again",
                        extra={"client_order_id": coid, "venue_order_id": answer.order_id, "venue": t.venue,
                               "call": call, "status": answer.status[:100], "filled_size": str(answer.filled_size)})
        if coid not in self._alerted and unlisted_too_long(streak, now_ms, after_s=self.alert_after_s):
            self._alerted.add(coid)
            venue_status_unlisted(t, answer, call, (now_ms - streak.since_ms) // 1000)

    def forget(self, client_order_id: str) -> None:
        """Drop what is known of an order no longer asked about here (terminal, or given up on)."""
        self._streaks.pop(client_order_id, None)
        self._logged.pop(client_order_id, None)
        self._alerted.discard(client_order_id)
