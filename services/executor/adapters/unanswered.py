"""Intent inserts whose answer was lost (the connection dropped after the server may have committed them).

Retried, the insert finds their rows there and returns none of them as inserted now: those orders would be taken for
known ones (a replayed trade) and resumed as after a restart (a status query first, the POST uncertain for good)
instead of started. That holds for a retry with the same tickets, and for the new tickets (a new arrival) of the
routed trade handed in again once admission gave up retrying. A row whose arrival is that of a ticket whose insert lost
its answer was written by that unanswered insert (an answered admission of the order has another arrival, and started
it), and no one started its order while nothing has written the row since (a resume, a start, an end all do): it
counts as inserted now, for the first ticket of the order that comes back (a restart forgets these: its recovery
resumes the row, which cannot tell whether a POST left before the restart).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from services.executor.domain.ticket import Ticket

# Of (client order id, arrival) pairs, those whose order row has that arrival and is as its insert wrote it: the rows
# the unanswered inserts wrote, while nothing has taken the order up, posted or ended it since. The insert writes the
# order's row and its order_pending row in one transaction, and only an end writes that one again: an order row of
# the same xmin was written by no one since (any UPDATE, HOT or not, whatever columns it sets: a sizing sets
# created_at and updated_at to one same time).
WRITTEN_BY = ("SELECT o.client_order_id FROM unnest(%s::text[], %s::bigint[]) AS w(coid, arr)"
              " JOIN orders o ON o.client_order_id = w.coid AND o.arrival_ns = w.arr"
              " JOIN order_pending p ON p.client_order_id = o.client_order_id AND p.xmin = o.xmin"
              " WHERE o.terminal_at IS NULL AND o.post_sent_ns IS NULL")
UNANSWERED_MAX = 100_000  # orders kept (the oldest go first: found again, such an order is resumed as known)


class UnansweredIntents:
    """The orders whose intent inserts lost their answer (client order id → the arrivals of those inserts' tickets)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, set[int]] = {}

    def lost(self, tickets: Iterable[Ticket]) -> None:
        """An insert of ``tickets`` ended without its answer."""
        for t in tickets:
            if t.arrival_ns:
                self.arrivals.setdefault(t.client_order_id, set()).add(t.arrival_ns)
        for coid in list(self.arrivals)[:max(0, len(self.arrivals) - UNANSWERED_MAX)]:
            del self.arrivals[coid]

    async def claim(self, pool: Any, tickets: Iterable[Ticket], inserted: set[str], refused: Container[str]) -> None:
        """Add to ``inserted`` (what an insert of ``tickets`` returned, less ``refused``) the orders whose row an
        unanswered insert wrote, untouched since; each order is looked at once, the first time a ticket of it comes
        back (the same ticket, or a new one), unless the look fails."""
        asked = {t.client_order_id: arrivals for t in tickets
                 if self.arrivals and (arrivals := self.arrivals.pop(t.client_order_id, None))}
        there = [(c, arrival) for c, arrivals in asked.items() if c not in inserted and c not in refused
                 for arrival in arrivals]
        if there:
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute(WRITTEN_BY, ([c for c, _ in there], [a for _, a in there]))
                    inserted |= {r["client_order_id"] for r in await cur.fetchall()}
            except BaseException:  # not looked at after all: kept for the next ticket back
                for c, arrivals in asked.items():
                    self.arrivals.setdefault(c, set()).update(arrivals)
                raise
