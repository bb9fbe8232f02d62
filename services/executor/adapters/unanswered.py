"""Intent inserts whose answer was lost (the connection dropped after the server may have committed them).

Retried with the same tickets, the insert finds their rows there and returns none of them as inserted now: those
orders would be taken for known ones (a replayed trade) and resumed as after a restart (a status query first, the
POST uncertain for good) instead of started. A row whose arrival is its ticket's was written by that ticket's
unanswered insert (another admission of the order has another arrival), and no one started its order: it counts as
inserted now.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from services.executor.domain.ticket import Ticket

# Of (client order id, arrival) pairs, those whose order row has that arrival: the rows those very tickets wrote, while
# nothing has posted or ended them (another admission of the order may have resumed it meanwhile).
WRITTEN_BY = ("SELECT o.client_order_id FROM unnest(%s::text[], %s::bigint[]) AS w(coid, arr)"
              " JOIN orders o ON o.client_order_id = w.coid AND o.arrival_ns = w.arr"
              " WHERE o.terminal_at IS NULL AND o.post_sent_ns IS NULL")
UNANSWERED_MAX = 100_000  # tickets kept (the oldest go first: found again, such an order is resumed as known)


class UnansweredIntents:
    """The tickets whose last intent insert lost its answer (client order id → arrival)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, int] = {}

    def lost(self, tickets: Iterable[Ticket]) -> None:
        """An insert of ``tickets`` ended without its answer."""
        self.arrivals.update((t.client_order_id, t.arrival_ns) for t in tickets if t.arrival_ns)
        for coid in list(self.arrivals)[:max(0, len(self.arrivals) - UNANSWERED_MAX)]:
            del self.arrivals[coid]

    async def claim(self, pool: Any, tickets: Iterable[Ticket], inserted: set[str], refused: Container[str]) -> None:
        """Add to ``inserted`` (what an insert of ``tickets`` returned, less ``refused``) the orders whose row an
        unanswered insert of the same ticket wrote; each ticket is looked at once, the first time it comes back."""
        asked = {t.client_order_id: t.arrival_ns for t in tickets
                 if self.arrivals and self.arrivals.pop(t.client_order_id, None) == t.arrival_ns}
        there = {c: arrival for c, arrival in asked.items() if c not in inserted and c not in refused}
        if there:
            async with pool.connection() as conn:
                cur = await conn.execute(WRITTEN_BY, (list(there), list(there.values())))
                inserted |= {r["client_order_id"] for r in await cur.fetchall()}
