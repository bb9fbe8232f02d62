"""Trailing high-water marks taken back from the tick log at start-up (pure).

Guard saves risen marks every few seconds (``mark_flush_s``); a crash loses the rises since the last save, and a
restarted guard reads the tick log only from its end, so the prices that arrived while it was down lift nothing
either. A stop left at a lower mark sells later than its ``mark × (1 − trail%)``, or never. Every logged price is
still in the log: at start-up guard reads the stretch since its last complete save and lifts each loaded stop to the
highest price of its source received after the stop was armed. A high-water mark is the highest price seen since
activation, so taking it again from prices already counted changes nothing.

A price counts for a stop only when it came at least ``margin_ns`` after the stop's row last changed
(``triggers.update_time``: created, PATCHed, held or resized): a price from before the stop existed, or before a
PATCH moved its activation price, must not lift it. Later changes make this stricter, never looser: a lift is only
ever left out. Prices of a stale or unsynced book, and STALE or resolution ticks, lift nothing, as in the engine.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from decimal import Decimal

from services.guard.domain.outcomes import Prices
from services.guard.domain.tick_view import BadTick, prices_of
from services.guard.domain.trigger_model import Kind, Source, TriggerSpec, live_mark
from tradingtools.market.v1 import market_pb2 as mpb

PRICE_KINDS = frozenset({mpb.TICK_KIND_PRICE_CHANGE, mpb.TICK_KIND_BEST_BID_ASK, mpb.TICK_KIND_BOOK,
                         mpb.TICK_KIND_LAST_TRADE_PRICE})


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


class PriceHighs:
    """The prices of a stretch of the log per asset, asked for the highest one of a source received at or after a
    time (each asset's series of a source is sorted once, on its first question)."""

    def __init__(self) -> None:
        self._ticks: dict[str, list[tuple[int, Prices]]] = {}
        self._ready: dict[tuple[str, Source], tuple[list[int], list[Decimal]]] = {}
        self.ticks = 0

    def add(self, asset_id: str, at_ns: int, prices: Prices) -> None:
        """One tick's prices, received (or seen) at ``at_ns``."""
        kept = self._ticks.get(asset_id)
        if kept is None:
            kept = self._ticks[asset_id] = []
        if self._ready:  # asked before: its answers for this asset are out of date
            for source in Source:
                self._ready.pop((asset_id, source), None)
        kept.append((at_ns, prices))
        self.ticks += 1

    def assets(self) -> set[str]:
        """The assets with at least one tick."""
        return set(self._ticks)

    def highest_since(self, asset_id: str, source: Source, since_ns: int) -> Decimal | None:
        """The highest ``source`` price of the asset received at or after ``since_ns`` (None when none was)."""
        key = (asset_id, source)
        ready = self._ready.get(key)
        if ready is None:
            series = sorted((at, price) for at, prices in self._ticks.get(asset_id, ())
                            if (price := prices.get(source)) is not None)
            times = [at for at, _p in series]
            highs = [p for _at, p in series]
            for i in range(len(highs) - 2, -1, -1):  # highs[i]: the highest from i on
                if highs[i + 1] > highs[i]:
                    highs[i] = highs[i + 1]
            ready = self._ready[key] = (times, highs)
        times, highs = ready
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
