"""The trigger engine: ARMED triggers per asset in price-ordered structures (pure, no I/O, no clock).

A tick costs O(log n + fired) for its asset: take-profits sit in ascending trigger price order
(the ones at or below the price fire: a prefix), stop-losses likewise (the ones at or above the
price fire: a suffix), trailing stops in :class:`TrailEpochs` (by arm time). A trigger leaves the engine when it
fires or is cancelled, so it can fire at most once.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal

from common import bands
from services.guard.domain.bulk_load import fill
from services.guard.domain.outcomes import Cancelled, Fired, Held, Outcome, Prices
from services.guard.domain.price_bands import published_band, source_band
from services.guard.domain.source_book import SourceBook, book_for
from services.guard.domain.stale_ranges import Band, StaleRanges
from services.guard.domain.trigger_model import Kind, OcoKey, Reason, Source, TriggerSpec, live_mark

__all__ = ["Band", "Cancelled", "Engine", "Fired", "Held", "Outcome", "Prices", "load"]

_ENGINES = itertools.count()
_KIND_ORDER = {Kind.STOP_LOSS: 0, Kind.TRAILING_STOP: 1, Kind.TAKE_PROFIT: 2}


class Engine:
    """Every ARMED trigger guard watches, indexed by asset and price source."""

    def __init__(self) -> None:
        self._bands: dict[str, Band] = {}
        self._specs: dict[str, TriggerSpec] = {}
        self._books: dict[str, dict[Source, SourceBook]] = {}
        self._by_asset: dict[str, set[str]] = {}
        self._epoch = next(_ENGINES)
        self._asset_changes = 0
        self._assets_changed: dict[str, None] = {}  # assets that gained their first or lost their last trigger
        self._oco: dict[OcoKey, set[str]] = {}  # OCO group (its name on one position) → its members
        self._held: dict[str, set[str]] = {}
        self._stale = StaleRanges()  # stale prices evaluated since the asset's triggers last changed
        # Books whose trailing marks rose since take_dirty_marks: the flush visits only these.
        self._dirty_books: dict[int, SourceBook] = {}
        self._band_dirty: set[str] = set()  # assets whose published band may have changed (take_band_changes)
        self._noting: list[set[str]] = []  # open :meth:`noting` blocks
        self.armed_ns = 0  # when the latest trailing stop was armed or changed (any asset), Unix ns
        # (arm time, order, asset, source) of trailing-stop epochs to merge once the log is read past it (settle)
        self._merges: list[tuple[int, int, str, Source]] = []
        self._merge_order = itertools.count()
        self._settled_ns = 0

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._specs

    def get(self, trigger_id: str) -> TriggerSpec | None:
        """The armed trigger with this id, with its current high-water mark."""
        spec = self._specs.get(trigger_id)
        if spec is None or spec.kind is not Kind.TRAILING_STOP:
            return spec
        trail = self._book(spec).trail
        return spec.with_mark(trail.mark_of(spec.id) if trail is not None else spec.high_water_mark)

    def watches(self, asset_id: str) -> bool:
        """True when at least one armed trigger is on ``asset_id``."""
        return asset_id in self._by_asset

    def band(self, asset_id: str) -> Band | None:
        """Per price source of the asset's triggers, (source, lo, hi, hi_inclusive): while every source's price
        is above its lo and below its hi (or equal to hi when hi_inclusive; None = unbounded), a stale tick
        (trusted or not) changes nothing, and so does a fresh one unless the asset has held triggers
        (:meth:`holds`: a fresh tick releases them), so it need not be evaluated. None when the asset has no
        trigger."""
        band = self._bands.get(asset_id)
        if band is not None:
            return band
        books = self._books.get(asset_id)
        if not books:
            return None
        out = [(source, *source_band(book)) for source, book in books.items()]
        band = self._bands[asset_id] = tuple(out)
        return band

    def published_band(self, asset_id: str) -> bands.AssetBand | None:
        """The band ingest may filter the asset's ticks with (:mod:`~services.guard.domain.price_bands`); None
        when the asset has no trigger."""
        books = self._books.get(asset_id)
        if not books:
            return None
        return published_band(books, asset_id in self._held)

    def take_band_changes(self) -> set[str]:
        """Assets whose triggers, marks or held set may have changed since the last call (their published band
        is to be computed again)."""
        out, self._band_dirty = self._band_dirty, set()
        return out

    def stale_covered(self, asset_id: str, prices: Prices, *, trusted: bool = False) -> bool:
        """True when a stale tick at ``prices`` would hold nothing new and move nothing: each watched price lies
        within the range of stale prices already evaluated since the asset's triggers or marks last changed
        (what a price would fire only grows towards either end of that range: take-profits upwards, stop-losses
        and trailing stops downwards; the held set only shrinks by a change) and, for a ``trusted`` tick (one that
        activates and lifts trailing stops: :meth:`on_tick`), none is above its band, where it would."""
        books = self._books.get(asset_id)
        if not books:
            return False
        return self._stale.covered(asset_id, books, prices, self.band if trusted else None)

    def holds(self, asset_id: str) -> bool:
        """True when triggers of ``asset_id`` are held (they crossed on a stale price)."""
        return asset_id in self._held

    @property
    def assets_version(self) -> tuple[int, int]:
        """Changes whenever an asset gains its first or loses its last trigger (unique per engine)."""
        return self._epoch, self._asset_changes

    def assets(self) -> set[str]:
        """Assets with at least one armed trigger."""
        return set(self._by_asset)

    def take_asset_changes(self) -> list[str]:
        """Assets that gained their first or lost their last trigger since the last call (one built by :func:`load`
        starts with none: its whole set is :meth:`assets`); whether each is watched now is :meth:`watches`."""
        out, self._assets_changed = list(self._assets_changed), {}
        return out

    def ids(self) -> set[str]:
        """Ids of every armed trigger."""
        return set(self._specs)

    def asset_ids(self, asset_id: str) -> set[str]:
        """Ids of the armed triggers on one asset."""
        return set(self._by_asset.get(asset_id, ()))

    def upsert(self, spec: TriggerSpec, *, armed_ns: int = 0) -> None:
        """Watch a trigger, replacing any previous version (a trigger held on a stale book stays held on the same
        asset, so the next fresh tick releases it; a trailing stop keeps its tracked mark when higher than the
        given one, unless a PATCH raised its activation price above that mark: :func:`live_mark`). ``armed_ns``:
        when it was armed or changed (Unix ns): a price received before it, read too late to fire on, lifts no
        mark of this stop, though it lifts those armed before it (:meth:`on_tick`); 0: the time the trigger was armed
        at before, if any, else not known."""
        for noted in self._noting:
            noted.add(spec.id)
        old = self.get(spec.id)
        was_held = carried = False
        if old is not None:
            was_held = spec.id in self._held.get(old.asset_id, ())
            armed_ns = armed_ns or self._book(old).armed_at(old.id)
            self._detach(old)
            if (old.kind is Kind.TRAILING_STOP and spec.kind is Kind.TRAILING_STOP
                    and old.asset_id == spec.asset_id and old.source is spec.source
                    and live_mark(old.high_water_mark, spec.activation_price) > spec.high_water_mark):
                spec = spec.with_mark(old.high_water_mark)
                carried = True  # higher than the version given (the stored one): still to be saved
        self._specs[spec.id] = spec
        self._changed(spec.asset_id)
        book = book_for(self._books, spec.asset_id, spec.source)
        if book.add(spec, unsaved_mark=carried, armed_ns=armed_ns, settled_ns=self._settled_ns):
            heapq.heappush(self._merges, (armed_ns, next(self._merge_order), spec.asset_id, spec.source))
        if spec.kind is Kind.TRAILING_STOP and armed_ns > self.armed_ns:
            self.armed_ns = armed_ns
        if carried:
            self._dirty_books[id(book)] = book
        ids = self._by_asset.get(spec.asset_id)
        if ids is None:
            ids = self._by_asset[spec.asset_id] = set()
            self._asset_changes += 1
            self._assets_changed[spec.asset_id] = None
        ids.add(spec.id)
        if spec.oco_group:
            self._oco.setdefault(spec.oco_key, set()).add(spec.id)
        if was_held and old is not None and old.asset_id == spec.asset_id:
            self.mark_held([spec.id])

    def mark_held(self, trigger_ids: Iterable[str]) -> None:
        """Record triggers as held on a stale book (what PostgreSQL says a previous process or version held):
        the next fresh tick of their asset releases them. Unknown ids are ignored."""
        for tid in trigger_ids:
            spec = self._specs.get(tid)
            if spec is not None:
                self._held.setdefault(spec.asset_id, set()).add(tid)
                self._band_dirty.add(spec.asset_id)

    def remove(self, trigger_id: str) -> TriggerSpec | None:
        """Stop watching a trigger; returns it (with its mark) or None when unknown."""
        spec = self.get(trigger_id)
        if spec is not None:
            self._detach(spec)
        return spec

    @contextmanager
    def noting(self) -> Iterator[set[str]]:
        """The ids of the triggers upserted or dropped while the block runs (a resync's read of PostgreSQL)."""
        noted: set[str] = set()
        self._noting.append(noted)
        try:
            yield noted
        finally:
            self._noting = [n for n in self._noting if n is not noted]

    def on_tick(self, asset_id: str, prices: Prices, *, stale: bool, trusted: bool = True,
                received_ns: int = 0) -> Outcome:
        """Evaluate one asset's triggers against a tick.

        Fresh: fire what crosses (OCO rules applied) and release held triggers. Stale: fire nothing, report what
        would have fired and was not held already; a ``trusted`` stale tick (the book was fresh when ingest
        received it, guard read it too late to fire on it) first activates trailing stops and lifts their marks as
        a fresh one does: the price really was the book's, and a high-water mark is the highest price seen.
        ``trusted=False`` (the book itself was stale or out of sync, or the tick's age is unknown): nothing moves.
        Nor does a price received (``received_ns``, 0: unknown) before a trailing stop was armed or changed move that
        stop, though a fresh one fires it if it crosses: that price came before the stop existed (or before a PATCH
        moved its activation price), and a mark taken from it would sell the position too early. It does move the
        stops armed before it.
        """
        books = self._books.get(asset_id)
        if not books:
            return Outcome()
        if stale:  # changes marks (trusted) and the held set, which band() checks first
            if trusted:
                self._rise(asset_id, books, prices, received_ns)
            return self._hold(asset_id, books, prices)
        self._changed(asset_id)
        crossed: list[tuple[TriggerSpec, Decimal]] = []
        for source, book in books.items():
            price = prices.get(source)
            if price is None or price <= 0:
                continue
            for tid, mark in book.take(price, received_ns):
                spec = self._specs[tid]
                crossed.append((spec.with_mark(mark) if mark is not None else spec, price))
            if book.trail is not None and book.trail.dirty:
                self._dirty_books[id(book)] = book
        out = Outcome()
        if crossed:
            crossed.sort(key=lambda c: (_KIND_ORDER[c[0].kind], c[0].id))
            self._settle(crossed, out)
        held = self._held.pop(asset_id, None)  # (the band is dirty already: _changed above)
        if held:
            out.released.extend(self._specs[t] for t in held if t in self._specs)
        self._prune(asset_id)
        return out

    def settle(self, through_ns: int) -> int:
        """Guard has read every tick stamped up to ``through_ns`` (the log's stamps only grow): no price received
        before it comes any more, so the trailing stops of a book armed up to it need no longer be told apart
        (:meth:`TrailEpochs.settle`). Returns ``through_ns``."""
        merges = self._merges
        if through_ns > self._settled_ns:
            self._settled_ns = through_ns
        while merges and merges[0][0] <= through_ns:
            _at, _n, asset_id, source = heapq.heappop(merges)
            book = self._books.get(asset_id, {}).get(source)
            if book is not None and book.trail is not None:
                book.trail.settle(through_ns)
        return through_ns

    def resolve(self, asset_id: str, reason: Reason = Reason.MARKET_RESOLVED) -> list[Cancelled]:
        """Cancel every trigger on an asset (its market resolved)."""
        out = []
        for tid in sorted(self._by_asset.get(asset_id, ())):
            spec = self.remove(tid)
            if spec is not None:
                out.append(Cancelled(spec, reason))
        return out

    def take_dirty_marks(self) -> list[tuple[Decimal, list[str]]]:
        """Trailing marks that rose since the last call, with the triggers carrying them."""
        return [marks for book in self.take_dirty_books() for marks in book]

    def take_dirty_books(self) -> Iterator[list[tuple[Decimal, list[str]]]]:
        """:meth:`take_dirty_marks` one book at a time, for a caller that lets other work run in between (a
        book's marks are read when it comes: a mark that rose meanwhile is taken at its new height)."""
        books, self._dirty_books = self._dirty_books, {}
        for book in books.values():
            if book.trail is not None:
                yield list(book.trail.take_dirty_marks())

    # internals

    def _settle(self, crossed: list[tuple[TriggerSpec, Decimal]], out: Outcome) -> None:
        closers: dict[OcoKey, str] = {}
        for spec, _price in crossed:
            if spec.oco_group and spec.closing:
                closers.setdefault(spec.oco_key, spec.id)
        for spec, price in crossed:
            self._forget(spec)
            winner = closers.get(spec.oco_key) if spec.oco_group else None
            if winner is None or winner == spec.id:
                out.fired.append(Fired(spec, price))
            else:
                out.cancelled.append(Cancelled(spec, Reason.OCO_SIBLING_FIRED, winner))
        for group, winner in closers.items():
            for tid in sorted(self._oco.get(group, ())):
                sibling = self.remove(tid)
                if sibling is not None:
                    out.cancelled.append(Cancelled(sibling, Reason.OCO_SIBLING_FIRED, winner))

    def _rise(self, asset_id: str, books: dict[Source, SourceBook], prices: Prices, received_ns: int) -> None:
        """Activate trailing stops and lift their marks at ``prices``, firing nothing (not those armed after the price
        was received)."""
        moved = False
        for source, book in books.items():
            trail = book.trail
            if trail is None or not len(trail):
                continue
            price = prices.get(source)
            if price is not None and price > 0 and trail.rise(price, received_ns):
                moved = True
                self._dirty_books[id(book)] = book
        if moved:
            self._changed(asset_id)

    def _hold(self, asset_id: str, books: dict[Source, SourceBook], prices: Prices) -> Outcome:
        out = Outcome()
        held = self._held.setdefault(asset_id, set())
        for source, book in books.items():
            price = prices.get(source)
            if price is None or price <= 0:
                continue
            self._stale.note(asset_id, source, price)
            for tid in book.peek(price):
                if tid not in held:
                    held.add(tid)
                    self._band_dirty.add(asset_id)
                    out.held.append(Held(self.get(tid) or self._specs[tid], price))
        if not held:
            del self._held[asset_id]
        return out

    def _changed(self, asset_id: str) -> None:
        """The asset's triggers or marks may have changed: its band and stale ranges are recomputed."""
        self._bands.pop(asset_id, None)
        self._stale.forget(asset_id)
        self._band_dirty.add(asset_id)

    def _book(self, spec: TriggerSpec) -> SourceBook:
        return self._books[spec.asset_id][spec.source]

    def _detach(self, spec: TriggerSpec) -> None:
        self._changed(spec.asset_id)
        self._book(spec).remove(spec)
        self._forget(spec)
        self._prune(spec.asset_id)

    def _forget(self, spec: TriggerSpec) -> None:
        """Drop the bookkeeping of a trigger already out of its price structure."""
        self._changed(spec.asset_id)
        del self._specs[spec.id]
        for noted in self._noting:
            noted.add(spec.id)
        ids = self._by_asset.get(spec.asset_id)
        if ids is not None:
            ids.discard(spec.id)
        held = self._held.get(spec.asset_id)
        if held is not None:
            held.discard(spec.id)
            if not held:
                del self._held[spec.asset_id]
        if spec.oco_group:
            members = self._oco.get(spec.oco_key)
            if members is not None:
                members.discard(spec.id)
                if not members:
                    del self._oco[spec.oco_key]

    def _prune(self, asset_id: str) -> None:
        books = self._books.get(asset_id)
        if books is None:
            return
        for source in [s for s, b in books.items() if not len(b)]:
            del books[source]
        if not books:
            del self._books[asset_id]
            if self._by_asset.pop(asset_id, None) is not None:
                self._asset_changes += 1
                self._assets_changed[asset_id] = None


def load(specs: Iterable[TriggerSpec]) -> Engine:
    """An engine watching ``specs`` (built in bulk: each price structure is sorted once)."""
    engine = Engine()
    fill(specs, engine._specs, engine._by_asset, engine._oco, engine._books)
    return engine
