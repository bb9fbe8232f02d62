"""What stale ticks an asset's triggers have already been evaluated against (pure): per asset and price source, the
lowest and highest stale price seen since the asset's triggers or marks last changed.

What a stale price would fire only grows towards either end of that range (take-profits upwards, stop-losses and
trailing stops downwards) and the held set only shrinks by a change, so a stale tick whose every watched price lies
inside the range holds nothing new (:meth:`StaleRanges.covered`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal

from services.guard.domain.outcomes import Prices
from services.guard.domain.trigger_model import Source

Band = tuple[tuple[Source, Decimal | None, Decimal | None, bool], ...]  # (source, lo, hi, hi_inclusive)


class StaleRanges:
    """Per asset and source, the (lowest, highest) stale price evaluated since :meth:`forget`."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[Source, tuple[Decimal, Decimal]]] = {}

    def note(self, asset_id: str, source: Source, price: Decimal) -> None:
        """A stale ``price`` of ``source`` was evaluated."""
        seen = self._seen.setdefault(asset_id, {})
        span = seen.get(source)
        seen[source] = (price, price) if span is None else (min(span[0], price), max(span[1], price))

    def forget(self, asset_id: str) -> None:
        """The asset's triggers or marks changed: what was seen before says nothing any more."""
        self._seen.pop(asset_id, None)

    def covered(self, asset_id: str, sources: Iterable[Source], prices: Prices,
                band: Callable[[str], Band | None] | None) -> bool:
        """True when every price of ``sources`` in ``prices`` lies within its seen range and, when ``band`` is given
        (a trusted tick, which lifts trailing stops), none is above the asset's band, where it would lift one."""
        seen = self._seen.get(asset_id)
        if not seen:
            return False
        for source in sources:
            price = prices.get(source)
            if price is None or price <= 0:
                continue
            span = seen.get(source)
            if span is None or not span[0] <= price <= span[1]:
                return False
        limits = band(asset_id) if band is not None else None
        if limits is not None:
            for source, _lo, hi, inclusive in limits:
                price = prices.get(source)
                if price is not None and hi is not None and (price > hi or (price == hi and not inclusive)):
                    return False
        return True
