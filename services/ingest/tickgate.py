"""Which top-of-book changes go to the tick log: guard's price bands (``common.bands``) applied in memory (pure:
time is passed in).

A price tick is left out only while guard's bands are trusted (a lease renewed by every band message, under one
guard epoch) and the tick is inside every band of its asset, is not the asset's first, does not flip its
staleness, is not due as its heartbeat, and no trigger of the asset is held (a fresh tick releases those). An
asset without a band has no armed trigger: its price ticks are left out too. Every other tick, and every
STALE, MARKET_RESOLVED and TICK_SIZE_CHANGE tick, goes out.

Guard's bands change with the ticks it reads (a price above a trailing stop's mark lifts it and raises its
stop level), so a band guard wrote before it read a tick ingest sent may be too wide for what followed. Ingest
narrows the band itself when it sends a fresh price above it (:func:`common.bands.after_rise`) and remembers
that price (a *rise*) until a message says guard has read the tick (``through_ns``), applying it again to any
band received meanwhile. Ticks that go out carry strictly increasing ``received_time_ns`` stamps, so
``through_ns`` says exactly which of them guard has read.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.bands import AssetBand, BandMessage, BandMeta, SourceBand, after_rise, decode, outside
from tradingtools.market.v1 import market_pb2 as mpb

PRICE_KINDS = frozenset({mpb.TICK_KIND_PRICE_CHANGE, mpb.TICK_KIND_BEST_BID_ASK, mpb.TICK_KIND_BOOK,
                         mpb.TICK_KIND_LAST_TRADE_PRICE})
_TWO = Decimal(2)
# a band that could not be read: every tick of its asset goes out
EVERY = AssetBand((SourceBand(0, None, None, False),), True)
# the top of book as ingest's books report it: (best bid, best ask, last trade, tick size, stale)
Top = tuple[Decimal | None, Decimal | None, Decimal | None, Decimal, bool]


@dataclass
class GateStats:
    """Ticks sent (by reason) and left out."""

    filtered: int = 0
    outside: int = 0
    first: int = 0
    heartbeat: int = 0
    held: int = 0
    unguarded: int = 0
    other_kinds: int = 0
    rechecked: int = 0
    loads: int = 0
    messages: int = 0
    bad_bands: int = 0


class _Rise:
    """Fresh prices sent above a band (or with none known), the highest per source, not yet read by guard."""

    __slots__ = ("prices", "recv_ns")

    def __init__(self) -> None:
        self.recv_ns = 0
        self.prices: list[Decimal | None] = [None, None, None]

    def add(self, recv_ns: int, prices: list[Decimal | None]) -> None:
        self.recv_ns = recv_ns
        kept = self.prices
        for i, price in enumerate(prices):
            if price is not None and (kept[i] is None or price > kept[i]):  # type: ignore[operator]
                kept[i] = price


def _prices(top: Top) -> list[Decimal | None]:
    bid, ask, last = top[0], top[1], top[2]
    return [bid, (bid + ask) / _TWO if bid is not None and ask is not None else None, last]


class TickGate:
    """Guard's bands as ingest keeps them, and the decision for each tick (:meth:`admit`)."""

    def __init__(self, *, heartbeat_s: float = 5.0, enabled: bool = True) -> None:
        self.heartbeat_ns = int(heartbeat_s * 1e9)
        self.enabled = enabled
        self.meta: BandMeta | None = None
        self.valid_until_ns = 0  # bands are trusted for ticks received before this
        self.trust_after_ns = 0  # ... and only once guard has read ticks up to this (what a previous process sent)
        self.published: dict[str, AssetBand] = {}
        self.bands: dict[str, AssetBand] = {}  # published, narrowed by the rises guard has not read
        self.floor_ns = 0  # the last stamp given
        self.stats = GateStats()
        self._last: dict[str, tuple[int, bool]] = {}  # asset -> (stamp, stale) of its last tick sent
        self._rises: dict[str, _Rise] = {}

    # ticks

    def admit(self, asset_id: str, kind: int, top: Top, recv_ns: int) -> int:
        """0 when the tick is left out, else the ``received_time_ns`` it goes out with."""
        if kind not in PRICE_KINDS:
            self.stats.other_kinds += 1
            return self._send(asset_id, top, recv_ns, None)
        stale = top[4]
        if recv_ns >= self.valid_until_ns:
            self.stats.unguarded += 1
            return self._send(asset_id, top, recv_ns, None if stale else _prices(top))
        last = self._last.get(asset_id)
        if last is None or last[1] != stale:
            self.stats.first += 1
            return self._send(asset_id, top, recv_ns, None if stale else _prices(top))
        band = self.bands.get(asset_id)
        if band is None:  # no armed trigger on the asset
            if recv_ns - last[0] >= self.heartbeat_ns:
                self.stats.heartbeat += 1
                return self._send(asset_id, top, recv_ns, None if stale else _prices(top))
            self.stats.filtered += 1
            return 0
        prices = _prices(top) if band.sources[-1].source == 1 or len(band.sources) > 1 else [top[0], None, top[2]]
        beyond = band is EVERY
        rising = False
        for sb in band.sources:
            price = prices[sb.source]
            if price is not None:
                side = outside(sb, price)
                if side:
                    beyond = True
                    rising = rising or side > 0
        if beyond:
            self.stats.outside += 1
            return self._send(asset_id, top, recv_ns, prices if rising and not stale else None)
        if band.holds and not stale:
            self.stats.held += 1
            return self._send(asset_id, top, recv_ns, None)
        if recv_ns - last[0] >= self.heartbeat_ns:
            self.stats.heartbeat += 1
            return self._send(asset_id, top, recv_ns, None)
        self.stats.filtered += 1
        return 0

    def recheck(self, asset_id: str, top: Top, now_ns: int) -> int:
        """After the asset's band changed: the stamp of a tick of its current top when that is outside the new band
        (or something is held and the book is fresh), else 0."""
        band = self.bands.get(asset_id)
        if band is None or now_ns >= self.valid_until_ns:
            return 0
        stale = top[4]
        prices = _prices(top)
        sides = [outside(sb, p) for sb in band.sources if (p := prices[sb.source]) is not None]
        if not any(sides) and not (band.holds and not stale) and band is not EVERY:
            return 0
        self.stats.rechecked += 1
        return self._send(asset_id, top, now_ns, prices if max(sides, default=0) > 0 and not stale else None)

    def _send(self, asset_id: str, top: Top, recv_ns: int, rise: list[Decimal | None] | None) -> int:
        """Stamp a tick that goes out; ``rise``: its prices may change guard's bands (narrow ours meanwhile)."""
        stamp = recv_ns if recv_ns > self.floor_ns else self.floor_ns + 1
        self.floor_ns = stamp
        self._last[asset_id] = (stamp, top[4])
        if rise is not None:
            kept = self._rises.get(asset_id)
            if kept is None:
                kept = self._rises[asset_id] = _Rise()
            kept.add(stamp, rise)
            band = self.bands.get(asset_id)
            if band is not None and band is not EVERY:
                self.bands[asset_id] = _narrowed(band, rise)
        return stamp

    def forget(self, assets: set[str]) -> None:
        """Forget what was kept about assets no longer followed."""
        last, rises = self._last, self._rises
        for asset_id in assets:
            last.pop(asset_id, None)
            rises.pop(asset_id, None)

    # bands

    def load(self, meta: BandMeta | None, encoded: dict[str, str], now_ns: int) -> list[str]:
        """Bands read whole (at start, after a reconnect or when a message asks for it); returns their assets.
        Without meta (no guard publishing), every tick goes out."""
        self.stats.loads += 1
        self.published = {}
        self.bands = {}
        if meta is None or not self.enabled:
            self.meta = None
            self.valid_until_ns = 0
            return []
        for asset_id, text in encoded.items():
            self.published[asset_id] = self._decode(text)
        self.meta = meta
        self._renew(meta, now_ns)
        self._read_through(meta.through_ns)
        for asset_id in self.published:
            self._effective(asset_id)
        return list(self.published)

    def apply(self, msg: BandMessage, now_ns: int) -> list[str] | None:
        """A band message; returns the assets whose band changed, or None when the bands must be read whole
        (another epoch, a reset, a message missed)."""
        self.stats.messages += 1
        meta = self.meta
        if meta is None or msg.reset or msg.meta.epoch != meta.epoch:
            return None
        if msg.meta.seq <= meta.seq:
            return []  # already in what was read
        if msg.meta.seq != meta.seq + 1:
            return None
        self.meta = msg.meta
        self._renew(msg.meta, now_ns)
        changed = []
        for asset_id, text in msg.bands.items():
            if text:
                self.published[asset_id] = self._decode(text)
            else:
                self.published.pop(asset_id, None)
            changed.append(asset_id)
        self._read_through(msg.meta.through_ns)
        for asset_id in changed:
            self._effective(asset_id)
        return changed

    def unguarded(self) -> None:
        """Bands unknown (the subscription broke): every tick goes out until they are read again."""
        self.meta = None
        self.valid_until_ns = 0

    def _renew(self, meta: BandMeta, now_ns: int) -> None:
        trusted = meta.through_ns >= self.trust_after_ns
        self.valid_until_ns = now_ns + int(meta.lease_s * 1e9) if trusted else 0

    def _read_through(self, through_ns: int) -> None:
        """Guard has read every tick stamped up to ``through_ns``: rises up to it are in its bands."""
        done = [a for a, rise in self._rises.items() if rise.recv_ns <= through_ns]
        for asset_id in done:
            del self._rises[asset_id]
            self._effective(asset_id)

    def _effective(self, asset_id: str) -> None:
        band = self.published.get(asset_id)
        if band is None:
            self.bands.pop(asset_id, None)
            return
        rise = self._rises.get(asset_id)
        self.bands[asset_id] = band if rise is None or band is EVERY else _narrowed(band, rise.prices)

    def _decode(self, text: str) -> AssetBand:
        try:
            band = decode(text)
        except ValueError:
            self.stats.bad_bands += 1
            return EVERY
        return band if band.sources else EVERY


def _narrowed(band: AssetBand, prices: list[Decimal | None]) -> AssetBand:
    sources = []
    changed = False
    for sb in band.sources:
        price = prices[sb.source]
        narrowed = after_rise(sb, price) if price is not None else sb
        changed = changed or narrowed is not sb
        sources.append(narrowed)
    return band._replace(sources=tuple(sources)) if changed else band
