"""Trailing marks as they were before prices read ahead of the tick log lifted them (pure, no I/O).

``coordinator.recheck`` evaluates stored books: the prices of the time it read them (``seen_ns``), read before ticks
still in the log (the backlog after the tick stream reconnects, a guard that lags). Marks are the highest price seen,
so the order of lifts does not matter; a fire does: a tick received before a stored book is an older price, and fires
a trailing stop only at that stop's mark as it was then.

One *layer* per stored book that lifted marks, keyed by when it was read: the marks of the stops it lifted from before
it, lifted since by every price received before it (older ticks, and stored books read earlier but evaluated later).
A tick received at ``t`` fires a stop at its mark in the first layer after ``t`` that has it (the stored books after
``t`` that did not lift the stop left its mark as it was), or at today's when none has; layers up to ``t`` are done
with (the log is read in order: no tick older than them is left). Whenever a mark of a time is unsure it is taken
higher (a stop fires on more prices, never on fewer than by that time's mark).
"""

from __future__ import annotations

from decimal import Decimal

# (trigger id, mark (0: not active yet), activation price, trail fraction)
Rising = list[tuple[str, Decimal, Decimal, Decimal]]
_Entry = tuple[Decimal, Decimal, Decimal]  # (mark (0: not active yet), activation price, trail fraction)


class PriorMarks:
    """The layers of one book's trailing stops (see the module docstring), oldest first."""

    __slots__ = ("_floor", "layers")

    def __init__(self) -> None:
        self.layers: list[tuple[int, dict[str, _Entry]]] = []  # (seen_ns, id -> entry), seen_ns ascending
        self._floor: tuple[Decimal | None, bool] | None = None  # lowest() when known

    def snapshot(self, rising: Rising, price: Decimal, seen_ns: int) -> None:
        """A stored book read ``seen_ns`` (> 0) at ``price``: it lifts the layers of the stored books read after it,
        and ``rising``, the stops it is about to activate or lift, with their marks before it, make its layer (a
        stop noted already in it keeps its earlier mark; one the stored books read after it lifted since has its
        mark of now: at least the one it had before)."""
        later = [marks for seen, marks in self.layers if seen > seen_ns]
        if later:
            self._lift(later, price)
        if not rising:
            return
        marks = next((m for seen, m in self.layers if seen == seen_ns), None)
        if marks is None:
            marks = {}
            self.layers.append((seen_ns, marks))
            self.layers.sort(key=lambda layer: layer[0])
        for tid, mark, activation, trail in rising:
            marks.setdefault(tid, (mark, activation, trail))
        self._floor = None

    def read_through(self, received_ns: int) -> bool:
        """The log is read up to a tick received ``received_ns`` (> 0): the layers of stored books read at or before
        it are done with. True when one was."""
        layers = self.layers
        n = 0
        while n < len(layers) and layers[n][0] <= received_ns:
            n += 1
        if n:
            del layers[:n]
            self._floor = None
        return n > 0

    def rise(self, price: Decimal) -> bool:
        """A price received before every layer's stored book activates and lifts their marks; True when one moved."""
        hi, inclusive = self.lowest()
        if hi is None or price < hi or (price == hi and inclusive):
            return False
        return self._lift([marks for _seen, marks in self.layers], price)

    def fires(self, trigger_id: str, price: Decimal) -> bool:
        """Whether the stop fires at a ``price`` received before every layer's stored book, by its mark of that time
        (a stop in no layer: by today's)."""
        for _seen, marks in self.layers:
            entry = marks.get(trigger_id)
            if entry is not None:
                mark, _activation, trail = entry
                return mark > 0 and mark * (1 - trail) >= price
        return True

    def lowest(self) -> tuple[Decimal | None, bool]:
        """(hi, hi_inclusive) of the layers: a price above the lowest mark lifts one, one at or above the lowest
        activation price of a stop inactive then activates it (None: no bound)."""
        floor = self._floor
        if floor is not None:
            return floor
        hi: Decimal | None = None
        inclusive = False
        for _seen, marks in self.layers:
            for mark, activation, _trail in marks.values():
                bound, incl = (mark, True) if mark > 0 else (activation, False)
                if hi is None or bound < hi or (bound == hi and not incl):
                    hi, inclusive = bound, incl
        floor = self._floor = (hi, inclusive)
        return floor

    def drop(self, trigger_id: str) -> None:
        """The stop left the book (fired, cancelled) or was replaced."""
        if any(trigger_id in marks for _seen, marks in self.layers):
            for _seen, marks in self.layers:
                marks.pop(trigger_id, None)
            self.layers = [layer for layer in self.layers if layer[1]]
            self._floor = None

    def __len__(self) -> int:
        return len(self.layers)

    def _lift(self, layers: list[dict[str, _Entry]], price: Decimal) -> bool:
        moved = False
        for marks in layers:
            for tid, (mark, activation, trail) in marks.items():
                if (mark > 0 and price > mark) or (mark <= 0 < price and price >= activation):
                    marks[tid] = (price, activation, trail)
                    moved = True
        if moved:
            self._floor = None
        return moved
