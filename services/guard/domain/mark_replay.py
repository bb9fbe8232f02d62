"""Trailing high-water marks taken back from the tick log at start-up (pure).

Guard saves risen marks every few seconds (``mark_flush_s``); a crash loses the rises since the last save, and a
restarted guard reads the tick log only from its end, so the prices that arrived while it was down lift nothing
either. A stop left at a lower mark sells later than its ``mark × (1 − trail%)``, or never. Every logged price is
still in the log: at start-up guard reads the stretch since its last complete save and lifts each loaded stop to the
highest price of its source received after the stop's row last changed. A high-water mark is the highest price seen
since activation, so taking it again from prices already counted changes nothing.

A price counts for a stop only when it came at least ``margin_ns`` after the stop's row last changed
(``triggers.update_time``: created, PATCHed, held or resized): a price from before the stop existed, or before a
PATCH moved its activation price, must not lift it, nor one from while the change was committed and announced (the
row's time is read before its transaction; a live guard arms the stop only once it hears of the change). Later
changes make this stricter, never looser: a lift is only ever left out. Prices of a stale or unsynced book, and
STALE or resolution ticks, lift nothing, as in the engine.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from decimal import Decimal

from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import PRICE_KINDS, BadTick, prices_of
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec, live_mark
from tradingtools.market.v1 import market_pb2 as mpb


def tick_prices(tick: mpb.PriceTick) -> tuple[int, Prices] | None:
    """When the tick's prices were the book's (a left-out price sent again: when it was seen, else when ingest
    received it) and the prices, or None when the tick lifts no mark (not a price tick, a stale or unsynced book,
    no time, no price, or a malformed one: the engine ignores such a tick whole)."""
    if tick.kind not in PRICE_KINDS or tick.stale or not tick.asset_id:
        return None
    received_ns = tick.received_time_ns
    if received_ns <= 0:
        return None
    at_ns = tick.observed_time_ns or received_ns
    try:
        prices = prices_of(tick)
    except BadTick:
        return None
    if prices == (None, None, None):
        return None
    return at_ns, prices


_SOURCES = (Source.BEST_BID, Source.MID, Source.LAST_TRADE)  # the order of Prices' fields


class PriceHighs:
    """The prices of a stretch of the log per asset and source, asked for the highest one received at or after a
    time. Only the prices that can still be such an answer are kept: per series, times rising and prices falling
    (a price with a higher or equal one at the same time or later is never the answer), so memory follows the
    series' shape, not the stretch's length."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, Source], tuple[list[int], list[Decimal]]] = {}

    def add(self, asset_id: str, at_ns: int, prices: Prices) -> None:
        """One tick's prices, received (or seen) at ``at_ns``."""
        for source, price in zip(_SOURCES, prices, strict=True):
            if price is None:
                continue
            series = self._series.get((asset_id, source))
            if series is None:
                self._series[(asset_id, source)] = ([at_ns], [price])
                continue
            times, highs = series
            if times[-1] <= at_ns:  # in time order, the usual case
                while highs and highs[-1] <= price:
                    times.pop()
                    highs.pop()
                if times and times[-1] == at_ns:  # a higher price at the same time
                    continue
                times.append(at_ns)
                highs.append(price)
                continue
            j = bisect.bisect_left(times, at_ns)
            if highs[j] >= price:  # as high or higher at the same time or later
                continue
            k = j
            while k < len(times) and times[k] == at_ns:
                k += 1
            i = j
            while i > 0 and highs[i - 1] <= price:
                i -= 1
            times[i:k] = [at_ns]
            highs[i:k] = [price]

    def assets(self) -> set[str]:
        """The assets with at least one price."""
        return {asset_id for asset_id, _source in self._series}

    def kept(self) -> int:
        """The prices kept."""
        return sum(len(times) for times, _highs in self._series.values())

    def highest_since(self, asset_id: str, source: Source, since_ns: int) -> Decimal | None:
        """The highest ``source`` price of the asset received at or after ``since_ns`` (None when none was)."""
        series = self._series.get((asset_id, source))
        if series is None:
            return None
        times, highs = series
        i = bisect.bisect_left(times, since_ns)
        return highs[i] if i < len(highs) else None


def recovered_marks(stops: Iterable[TriggerSpec], changed_ns: Mapping[str, int], highs: PriceHighs,
                    margin_ns: int) -> dict[str, Decimal]:
    """The trailing stops whose mark the log's prices lift, with the lifted mark. A stop with no known row change
    time (``changed_ns``) is left alone; so is one whose highest price since that time (plus ``margin_ns``) is not
    above its mark, or below its activation price."""
    out: dict[str, Decimal] = {}
    for spec in stops:
        if spec.kind is not Kind.TRAILING_STOP:
            continue
        changed = changed_ns.get(spec.id)
        if changed is None or changed <= 0:
            continue
        high = highs.highest_since(spec.asset_id, spec.source, changed + margin_ns)
        if high is None or high < spec.activation_price:
            continue
        if high > live_mark(spec.high_water_mark, spec.activation_price):
            out[spec.id] = high
    return out
