"""The band of prices inside which a tick changes nothing, per asset and price source (pure, no I/O).

Guard skips ticks inside its own bands (:meth:`~services.guard.domain.trigger_index.Engine.band`) and
publishes them to ingest (:class:`common.bands.AssetBand`), which then appends only the ticks that may matter.
Per source: ``lo`` is the highest price at which something fires going down (the highest stop-loss, the
highest trailing-stop level); ``hi`` the lowest price at which something happens going up (the lowest
take-profit, trailing activation price or high-water mark: a price at the lowest mark lifts nothing, so that
``hi`` is inclusive).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from common import bands
from services.guard.domain.source_book import SourceBook
from services.guard.domain.trigger_model import Source

SOURCE_INDEX = {Source.BEST_BID: bands.BEST_BID, Source.MID: bands.MID, Source.LAST_TRADE: bands.LAST_TRADE}


def source_band(book: SourceBook) -> tuple[Decimal | None, Decimal | None, bool]:
    """(lo, hi, hi_inclusive) of one asset and source: a price above lo and below hi (or equal to it when
    inclusive) fires, activates and lifts nothing (None = unbounded)."""
    lo = book.sl[-1][0] if book.sl else None
    hi = book.tp[0][0] if book.tp else None
    inclusive = False  # a take-profit fires at its price
    trail = book.trail
    if trail is not None and len(trail):
        t_lo, t_hi, t_inclusive = trail.band()
        if t_lo is not None and (lo is None or t_lo > lo):
            lo = t_lo
        if t_hi is not None and (hi is None or t_hi < hi):
            hi, inclusive = t_hi, t_inclusive
    return lo, hi, inclusive


def published_band(books: dict[Source, SourceBook], holds: bool) -> bands.AssetBand:
    """The band ingest filters an asset's ticks with (its books by source; ``holds``: triggers are held)."""
    out = []
    changes: tuple[int, ...] = ()
    for source in sorted(books, key=SOURCE_INDEX.__getitem__):
        book = books[source]
        lo, hi, inclusive = source_band(book)
        trail = book.trail.min_trail() if book.trail is not None else None
        tp = book.tp[0][0] if book.tp and trail is not None else None  # only a band with a trail is narrowed
        # the latest arm of a trailing stop still in the book: a price stamped before it lifted no mark of that stop,
        # and one stamped at or after it lifts every mark of the book (each stop's epoch is labelled with its arm
        # time, or with the later arm time of the epoch it merged into, at most this)
        armed_ns = book.trail.armed_ns if book.trail is not None and trail is not None else 0
        out.append(bands.SourceBand(SOURCE_INDEX[source], lo, hi, inclusive, trail, tp, armed_ns))
        changes = bands.merged_changes(changes, book.changes) if book.changes else changes
    return bands.AssetBand(tuple(out), holds, changes)


def band_changes(assets: Iterable[str], band_of: Callable[[str], bands.AssetBand | None],
                 published: Mapping[str, str]) -> dict[str, str]:
    """The encoded bands of ``assets`` that differ from ``published`` ("" for an asset left without triggers)."""
    out = {}
    for asset_id in assets:
        band = band_of(asset_id)
        text = "" if band is None else bands.encode(band)
        if published.get(asset_id, "") != text:
            out[asset_id] = text
    return out
