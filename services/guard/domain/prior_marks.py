"""Trailing marks as they were before a price read ahead of the tick log lifted them (pure, no I/O).

``coordinator.recheck`` evaluates stored books: today's prices, read before ticks still in the log (the backlog after
the tick stream reconnects, a guard that lags). Marks are the highest price seen, so the order of lifts does not
matter; a fire does: a tick received before the stored book is an older price, and fires a trailing stop only at
that stop's mark as it was then (the mark before the stored book lifted it, lifted by the older prices read since).
"""

from __future__ import annotations

from decimal import Decimal

# (trigger id, mark (0: not active yet), activation price, trail fraction)
Rising = list[tuple[str, Decimal, Decimal, Decimal]]


class PriorMarks:
    """The marks of one book's trailing stops from before a stored book's price (received ``seen_ns``) lifted them."""

    __slots__ = ("marks", "seen_ns")

    def __init__(self) -> None:
        self.seen_ns = 0
        self.marks: dict[str, tuple[Decimal, Decimal, Decimal]] = {}  # id -> (mark, activation, trail fraction)

    def note(self, rising: Rising, seen_ns: int) -> None:
        """Stops a price received ``seen_ns`` is about to activate or lift, with their marks before it (a stop
        noted already keeps its earlier mark)."""
        for tid, mark, activation, trail in rising:
            self.marks.setdefault(tid, (mark, activation, trail))
        self.seen_ns = max(self.seen_ns, seen_ns)

    def older(self, received_ns: int) -> bool:
        """True when a price received ``received_ns`` (0: unknown) came before the stored book's."""
        return 0 < received_ns < self.seen_ns

    def rise(self, price: Decimal) -> bool:
        """An older price activates and lifts the prior marks as it did then; True when one moved."""
        moved = False
        for tid, (mark, activation, trail) in self.marks.items():
            if (mark > 0 and price > mark) or (mark <= 0 < price and price >= activation):
                self.marks[tid] = (price, activation, trail)
                moved = True
        return moved

    def fires(self, trigger_id: str, price: Decimal) -> bool:
        """Whether the stop fires at an older ``price`` by its mark of that time (a stop not noted: by today's)."""
        entry = self.marks.get(trigger_id)
        if entry is None:
            return True
        mark, _activation, trail = entry
        return mark > 0 and mark * (1 - trail) >= price

    def lowest(self) -> tuple[Decimal | None, bool]:
        """(hi, hi_inclusive) of the prior marks: a price above the lowest mark lifts one, one at or above the lowest
        activation price of a stop inactive then activates it (None: no bound)."""
        hi: Decimal | None = None
        inclusive = False
        for mark, activation, _trail in self.marks.values():
            bound, incl = (mark, True) if mark > 0 else (activation, False)
            if hi is None or bound < hi or (bound == hi and not incl):
                hi, inclusive = bound, incl
        return hi, inclusive

    def drop(self, trigger_id: str) -> None:
        """The stop left the book (fired, cancelled) or was replaced."""
        self.marks.pop(trigger_id, None)

    def __len__(self) -> int:
        return len(self.marks)
