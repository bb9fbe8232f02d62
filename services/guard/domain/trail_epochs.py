"""Trailing stops of one asset and price source grouped by when they were armed (pure, no I/O).

A price received before a trailing stop was armed (or changed) lifts no mark of that stop and activates nothing of
it (the price came before the stop existed), but fires it with today's mark; it still lifts the stops armed before
it. So the stops are kept in *epochs*, one :class:`TrailBook` per arm time (``label``, Unix ns, 0: not known, e.g.
loaded at start): a price received at ``t`` is a full tick for the epochs labelled at or before ``t`` and only a
fire for the later ones.

Epochs merge once no price received before the later one's label can come any more (:meth:`TrailEpochs.settle`:
guard has read the tick log past it, and the log's stamps only grow), the smaller into the larger (each stop moves
O(log n) times in its life), under the later label. So a book usually has one epoch, and a few only while guard
has not yet read the log up to its latest arms.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from services.guard.domain.trailing import TrailBook


class _Epoch:
    __slots__ = ("book", "label")

    def __init__(self, label: int, book: TrailBook) -> None:
        self.label = label
        self.book = book


def _lifts(label: int, received_ns: int) -> bool:
    """A price received at ``received_ns`` (0: not known) may lift the marks of stops armed at ``label``."""
    return not label > received_ns > 0


class TrailEpochs:
    """The trailing stops of one asset and price source, by arm epoch (ascending labels, none empty)."""

    __slots__ = ("_epochs",)

    def __init__(self) -> None:
        self._epochs: list[_Epoch] = []

    def __len__(self) -> int:
        epochs = self._epochs
        return len(epochs[0].book) if len(epochs) == 1 else sum(len(e.book) for e in epochs)

    @property
    def armed_ns(self) -> int:
        """The latest arm of a stop still here (0: none known): a price received before it lifted no mark of some
        stop here."""
        return self._epochs[-1].label if self._epochs else 0

    @property
    def epochs(self) -> int:
        """How many epochs are kept (1 once guard has read past every arm)."""
        return len(self._epochs)

    def armed_at(self, trigger_id: str) -> int | None:
        """The label of the stop's epoch (None when unknown)."""
        epoch = self._epoch_of(trigger_id)
        return epoch.label if epoch is not None else None

    def add(self, trigger_id: str, trail_pct: Decimal, activation_price: Decimal, high_water_mark: Decimal, *,
            armed_ns: int = 0, settled_ns: int = 0, unsaved: bool = False) -> bool:
        """Watch a stop armed at ``armed_ns`` (:meth:`TrailBook.add`); ``settled_ns``: no price received before it
        comes any more (:meth:`settle`). True when the stop opened an epoch that :meth:`settle` is to merge once
        the log is read past ``armed_ns``."""
        epochs = self._epochs
        epoch = next((e for e in epochs if e.label == armed_ns), None)
        if epoch is None and armed_ns <= settled_ns and epochs and epochs[0].label <= settled_ns:
            epoch = epochs[0]  # no price can tell the two apart any more
            epoch.label = max(epoch.label, armed_ns)
        opened = epoch is None
        if epoch is None:
            epoch = _Epoch(armed_ns, TrailBook())
            at = next((i for i, e in enumerate(epochs) if e.label > armed_ns), len(epochs))
            epochs.insert(at, epoch)
        try:
            epoch.book.add(trigger_id, trail_pct, activation_price, high_water_mark, unsaved=unsaved)
        except ValueError:
            self._drop_empty()
            raise
        return opened and len(epochs) > 1

    def remove(self, trigger_id: str) -> bool:
        """Stop watching; False when unknown."""
        epoch = self._epoch_of(trigger_id)
        if epoch is None:
            return False
        epoch.book.remove(trigger_id)
        if not len(epoch.book):
            self._drop_empty()
        return True

    def mark_of(self, trigger_id: str) -> Decimal:
        """The stop's high-water mark (0 while not yet active or unknown)."""
        epoch = self._epoch_of(trigger_id)
        return epoch.book.mark_of(trigger_id) if epoch is not None else Decimal(0)

    @property
    def dirty(self) -> bool:
        """True when marks changed since :meth:`take_dirty_marks` last ran."""
        epochs = self._epochs
        return epochs[0].book.dirty if len(epochs) == 1 else any(e.book.dirty for e in epochs)

    def take(self, price: Decimal, received_ns: int) -> list[tuple[str, Decimal]]:
        """Apply a fresh price received at ``received_ns`` (0: not known): :meth:`TrailBook.tick` for the stops armed
        at or before it, :meth:`TrailBook.fire` for the later ones. Returns the stops that fire, with their marks."""
        epochs = self._epochs
        if len(epochs) == 1:  # the usual case
            book = epochs[0].book
            fired = book.tick(price) if _lifts(epochs[0].label, received_ns) else book.fire(price)
            if fired and not len(book):
                epochs.clear()
            return fired
        out: list[tuple[str, Decimal]] = []
        for epoch in epochs:
            book = epoch.book
            out.extend(book.tick(price) if _lifts(epoch.label, received_ns) else book.fire(price))
        if out:
            self._drop_empty()
        return out

    def rise(self, price: Decimal, received_ns: int) -> bool:
        """Apply a price that may not fire (read too late) to the stops armed at or before ``received_ns``
        (:meth:`TrailBook.rise`); True when a stop was activated or a mark lifted."""
        moved = False
        for epoch in self._epochs:
            if epoch.label <= received_ns and epoch.book.rise(price):
                moved = True
        return moved

    def settle(self, through_ns: int) -> None:
        """No price received at or before ``through_ns`` comes any more: merge the epochs labelled up to it (the
        smaller books into the largest, under the latest label)."""
        epochs = self._epochs
        n = 0
        while n < len(epochs) and epochs[n].label <= through_ns:
            n += 1
        if n < 2:
            return
        merged = epochs[:n]
        base = max(merged, key=lambda e: len(e.book))
        for epoch in merged:
            if epoch is not base:
                base.book.absorb(epoch.book)
        base.label = merged[-1].label
        epochs[:n] = [base]

    def band(self) -> tuple[Decimal | None, Decimal | None, bool]:
        """(lo, hi, hi_inclusive) of every epoch together (:meth:`TrailBook.band`)."""
        lo: Decimal | None = None
        hi: Decimal | None = None
        inclusive = False
        for epoch in self._epochs:
            e_lo, e_hi, e_inclusive = epoch.book.band()
            if e_lo is not None and (lo is None or e_lo > lo):
                lo = e_lo
            if e_hi is not None:
                if hi is None or e_hi < hi:
                    hi, inclusive = e_hi, e_inclusive
                elif e_hi == hi:
                    inclusive = inclusive and e_inclusive  # a price at hi activates a stop of one of them
        return lo, hi, inclusive

    def min_trail(self) -> Decimal | None:
        """The smallest trail fraction of the stops (None when empty): :meth:`TrailBook.min_trail`."""
        trails = [t for e in self._epochs if (t := e.book.min_trail()) is not None]
        return min(trails) if trails else None

    def would_fire(self, price: Decimal) -> list[str]:
        """Stops at or below their level at ``price`` with today's marks; changes nothing."""
        return [tid for e in self._epochs for tid in e.book.would_fire(price)]

    def take_dirty_marks(self) -> Iterator[tuple[Decimal, list[str]]]:
        """Marks changed since the last call, each with the stops now carrying it."""
        for epoch in list(self._epochs):
            yield from epoch.book.take_dirty_marks()

    # internals

    def _epoch_of(self, trigger_id: str) -> _Epoch | None:
        return next((e for e in self._epochs if trigger_id in e.book), None)

    def _drop_empty(self) -> None:
        self._epochs = [e for e in self._epochs if len(e.book)]
