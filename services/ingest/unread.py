"""The unread prices' effect on a band: ingest's tick gate narrows guard's band of an asset by the fresh prices it sent
and guard has not read yet, as guard lifts its trailing marks by them (pure; see ``services.ingest.tickgate``)."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from common.bands import AssetBand, SourceBand, after_older_rise, after_rise
from services.ingest.assetbook import Top

_TWO = Decimal(2)
# a band that could not be read: every tick of its asset goes out
EVERY = AssetBand((SourceBand(0, None, None, False),), True)


class Merged(NamedTuple):
    """Unread prices merged into one: the highest [best bid, mid, last trade] of them, the stamp of the first; ``again``
    when one of them was a left-out price sent again (``TickGate.replay``)."""

    prices: list[Decimal | None]
    first: int
    again: bool = False


# An asset's unread prices: [(stamp, top), ...] in stamp order, at most KEPT; beyond, the two oldest merge into
# (the later stamp, Merged): the band stays as narrow or narrower until guard has read both. A top's prices are
# computed only when a band is narrowed by them. A price stamped before a source's ``armed_ns`` raises only the lo
# of that source (guard lifts no mark of the later stops by it); a merged one that straddles it leaves the asset's
# band at EVERY. A left-out price sent again is kept as a Merged of its own marked ``again``: guard may leave it alone
# (``services.guard.domain.tick_view.replay_refused``), so it, and anything merged with it, raises only the lo (which
# only sends more) and never the hi.
Unread = list[tuple[int, "Top | Merged"]]
KEPT = 8
BEFORE_ARMS = -1  # a stamp before every source's armed_ns (prices narrow only the lo of a source armed since)


def sent_again(item: Top | Merged) -> bool:
    """Whether an unread price is, or holds, a left-out price sent again (it raises only the lo)."""
    return isinstance(item, Merged) and item.again


def higher(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """The higher of two prices (None: none)."""
    return a if b is None or (a is not None and a >= b) else b


def as_prices(item: Top | Merged) -> list[Decimal | None]:
    """[best bid, mid, last trade] of an unread price."""
    return item.prices if isinstance(item, Merged) else prices_of(item)


def highest_of(unread: Unread) -> list[Decimal | None]:
    """The highest unread price per source."""
    out = as_prices(unread[0][1])
    for _stamp, item in unread[1:]:
        out = [higher(a, b) for a, b in zip(out, as_prices(item), strict=True)]
    return out


def prices_of(top: Top) -> list[Decimal | None]:
    """[best bid, mid, last trade] of a top of book."""
    bid, ask, last = top[0], top[1], top[2]
    return [bid, (bid + ask) / _TWO if bid is not None and ask is not None else None, last]


def narrowed_by(band: AssetBand, unread: Unread) -> AssetBand:
    """``band`` narrowed by the unread prices guard lifts its marks by (:data:`Unread`)."""
    if not any(sb.armed_ns for sb in band.sources) and not any(sent_again(i) for _s, i in unread):
        return narrowed(band, highest_of(unread))
    highest: list[Decimal | None] = [None, None, None]
    older: list[Decimal | None] = [None, None, None]  # the highest stamped before the source's armed_ns, or sent again
    for stamp, item in unread:
        prices = as_prices(item)
        first, again = (item.first, item.again) if isinstance(item, Merged) else (stamp, False)
        for sb in band.sources:
            if again or stamp < sb.armed_ns:
                older[sb.source] = higher(prices[sb.source], older[sb.source])
                continue
            if first < sb.armed_ns:
                return EVERY
            highest[sb.source] = higher(prices[sb.source], highest[sb.source])
    return narrowed(narrowed(band, highest), older, BEFORE_ARMS)


def narrowed(band: AssetBand, prices: list[Decimal | None], stamp: int | None = None) -> AssetBand:
    """``band`` after guard read ``prices`` (stamped ``stamp``: None, after every source's ``armed_ns``; before a
    source's, only its ``lo`` rises)."""
    sources = []
    changed = False
    for sb in band.sources:
        price = prices[sb.source]
        if price is None:
            narrowed = sb
        elif stamp is None or stamp >= sb.armed_ns:
            narrowed = after_rise(sb, price)
        else:
            narrowed = after_older_rise(sb, price)
        changed = changed or narrowed is not sb
        sources.append(narrowed)
    return band._replace(sources=tuple(sources)) if changed else band
