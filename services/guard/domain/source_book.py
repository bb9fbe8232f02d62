"""The price-ordered book of ARMED triggers for one asset and price source (pure, no I/O)."""

from __future__ import annotations

from decimal import Decimal

from sortedcontainers import SortedList

from services.guard.domain.prior_marks import PriorMarks
from services.guard.domain.trailing import TrailBook
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec

_MAX_ID = "\U0010ffff"  # sorts after every trigger id: (price, _MAX_ID) bounds every trigger at that price


class SourceBook:
    """The ARMED triggers of one asset and price source: take-profits and stop-losses sorted by trigger
    price (what a price fires is a prefix of one and a suffix of the other), trailing stops in a
    :class:`TrailBook`."""

    __slots__ = ("armed_ns", "prior", "sl", "tp", "trail")

    def __init__(self) -> None:
        self.tp: SortedList = SortedList()  # (trigger price, id)
        self.sl: SortedList = SortedList()  # (trigger price, id)
        self.trail: TrailBook | None = None  # created with the first trailing stop
        # when its latest trailing stop was armed (or changed), Unix ns: a price received before it lifts no mark
        # when read too late to fire on (that stop did not exist yet); 0: not known (loaded at start)
        self.armed_ns = 0
        # the trailing marks before a stored book's price lifted them: the fire rule of older prices read after it
        self.prior: PriorMarks | None = None

    def __len__(self) -> int:
        return len(self.tp) + len(self.sl) + (len(self.trail) if self.trail is not None else 0)

    def add(self, spec: TriggerSpec, *, unsaved_mark: bool = False) -> None:
        if self.prior is not None:
            self.prior.drop(spec.id)  # a new version: its mark is the one given
        if spec.kind is Kind.TAKE_PROFIT:
            self.tp.add((spec.trigger_price, spec.id))
        elif spec.kind is Kind.STOP_LOSS:
            self.sl.add((spec.trigger_price, spec.id))
        else:
            if self.trail is None:
                self.trail = TrailBook()
            self.trail.add(spec.id, spec.trail_pct, spec.activation_price, spec.high_water_mark, unsaved=unsaved_mark)

    def remove(self, spec: TriggerSpec) -> None:
        if self.prior is not None:
            self.prior.drop(spec.id)
        if spec.kind is Kind.TAKE_PROFIT:
            self.tp.remove((spec.trigger_price, spec.id))
        elif spec.kind is Kind.STOP_LOSS:
            self.sl.remove((spec.trigger_price, spec.id))
        elif self.trail is not None:
            self.trail.remove(spec.id)

    def take(self, price: Decimal, *, lift: bool = True, received_ns: int = 0,
             snapshot: bool = False) -> list[tuple[str, Decimal | None]]:
        """Remove and return what fires at ``price``, received ``received_ns``: (id, mark for trailing stops);
        ``lift`` False: the price activates and lifts no trailing stop (:meth:`TrailBook.fire`); ``snapshot``: a
        stored book read ahead of the tick log (:mod:`~services.guard.domain.prior_marks`)."""
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
        trail = self.trail
        if trail is None or not len(trail):
            return out
        prior = self.prior
        if snapshot and lift:
            rising = trail.rising(price)
            if rising:
                prior = self.prior = prior or PriorMarks()
                prior.note(rising, received_ns)
        elif prior is not None and prior.older(received_ns):
            out.extend(self._take_older(trail, prior, price, lift))
            return out
        elif prior is not None:
            self.prior = None  # the log is read past the stored book: today's marks are the marks
        out.extend(trail.tick(price) if lift else trail.fire(price))
        return out

    def _take_older(self, trail: TrailBook, prior: PriorMarks, price: Decimal,
                    lift: bool) -> list[tuple[str, Decimal | None]]:
        """The trailing stops an older price fires by their marks of that time, with today's marks (at or above
        those: the level they give is crossed too, and a fire handed back re-arms the stop at it). A mark is the
        highest price seen: the older price lifts today's marks as well."""
        if lift:
            trail.rise(price)
            prior.rise(price)
        out: list[tuple[str, Decimal | None]] = []
        for tid in trail.would_fire(price):
            if prior.fires(tid, price):
                out.append((tid, trail.mark_of(tid)))
                trail.remove(tid)
                prior.drop(tid)
        return out

    def rise(self, price: Decimal, received_ns: int) -> bool:
        """A price that may not fire (read late): activate and lift trailing marks, the prior ones too when it is
        older than the stored book that lifted them. True when a mark or a prior mark moved."""
        moved = self.trail.rise(price) if self.trail is not None else False
        prior = self.prior
        if prior is not None and prior.older(received_ns) and prior.rise(price):
            moved = True
        return moved

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
