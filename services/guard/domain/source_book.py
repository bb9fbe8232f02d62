"""The price-ordered book of ARMED triggers for one asset and price source (pure, no I/O)."""

from __future__ import annotations

from decimal import Decimal

from sortedcontainers import SortedList

from common.bands import kept_changes
from services.guard.domain.trail_epochs import TrailEpochs
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec

_MAX_ID = "\U0010ffff"  # sorts after every trigger id: (price, _MAX_ID) bounds every trigger at that price


class SourceBook:
    """The ARMED triggers of one asset and price source: take-profits and stop-losses sorted by trigger
    price (what a price fires is a prefix of one and a suffix of the other), trailing stops in a
    :class:`TrailEpochs`; ``changes``: when its latest triggers were armed or changed (``common.bands``)."""

    __slots__ = ("changes", "sl", "tp", "trail")

    def __init__(self) -> None:
        self.tp: SortedList = SortedList()  # (trigger price, id)
        self.sl: SortedList = SortedList()  # (trigger price, id)
        self.trail: TrailEpochs | None = None  # created with the first trailing stop
        self.changes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.tp) + len(self.sl) + (len(self.trail) if self.trail is not None else 0)

    def add(self, spec: TriggerSpec, *, unsaved_mark: bool = False, armed_ns: int = 0, settled_ns: int = 0) -> bool:
        """Watch a trigger; a trailing stop armed (or changed) at ``armed_ns`` (:meth:`TrailEpochs.add`: True when
        its epoch is to be merged by :meth:`TrailEpochs.settle` once the tick log is read past it)."""
        self.changes = kept_changes(self.changes, armed_ns)
        if spec.kind is Kind.TAKE_PROFIT:
            self.tp.add((spec.trigger_price, spec.id))
        elif spec.kind is Kind.STOP_LOSS:
            self.sl.add((spec.trigger_price, spec.id))
        else:
            if self.trail is None:
                self.trail = TrailEpochs()
            return self.trail.add(spec.id, spec.trail_pct, spec.activation_price, spec.high_water_mark,
                                  armed_ns=armed_ns, settled_ns=settled_ns, unsaved=unsaved_mark)
        return False

    def armed_at(self, trigger_id: str) -> int:
        """When the trailing stop's epoch was armed (:class:`TrailEpochs`; 0: not known, or not a trailing stop)."""
        return (self.trail.armed_at(trigger_id) or 0) if self.trail is not None else 0

    def remove(self, spec: TriggerSpec) -> None:
        if spec.kind is Kind.TAKE_PROFIT:
            self.tp.remove((spec.trigger_price, spec.id))
        elif spec.kind is Kind.STOP_LOSS:
            self.sl.remove((spec.trigger_price, spec.id))
        elif self.trail is not None:
            self.trail.remove(spec.id)

    def take(self, price: Decimal, received_ns: int = 0) -> list[tuple[str, Decimal | None]]:
        """Remove and return what fires at ``price``: (id, mark for trailing stops); received at ``received_ns``
        (0: not known), it activates and lifts no trailing stop armed after it (:meth:`TrailEpochs.take`)."""
        out: list[tuple[str, Decimal | None]] = []
        tp, sl = self.tp, self.sl
        if tp and tp[0][0] <= price:  # the lowest take-profit first: usually nothing crosses
            end = tp.bisect_right((price, _MAX_ID))
            out.extend((tid, None) for _p, tid in tp.islice(0, end))
            del tp[:end]
        if sl and sl[-1][0] >= price:
            start = sl.bisect_left((price,))
            out.extend((tid, None) for _p, tid in sl.islice(start))
            del sl[start:]
        if self.trail is not None and len(self.trail):
            out.extend(self.trail.take(price, received_ns))
        return out

    def peek(self, price: Decimal) -> list[str]:
        """What would fire at ``price``; changes nothing."""
        out = [tid for _p, tid in self.tp.islice(0, self.tp.bisect_right((price, _MAX_ID)))]
        out.extend(tid for _p, tid in self.sl.islice(self.sl.bisect_left((price,))))
        if self.trail is not None and len(self.trail):
            out.extend(self.trail.would_fire(price))
        return out


def book_for(books: dict[str, dict[Source, SourceBook]], asset_id: str, source: Source) -> SourceBook:
    """The book of ``asset_id`` and ``source`` in ``books``, created when missing."""
    by_source = books.get(asset_id)
    if by_source is None:
        by_source = books[asset_id] = {}
    book = by_source.get(source)
    if book is None:
        book = by_source[source] = SourceBook()
    return book
