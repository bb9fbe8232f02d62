"""Which top-of-book changes go to the tick log: guard's price bands (``common.bands``) applied in memory (pure:
time is passed in).

A price tick is left out only while guard's bands are trusted (a lease renewed by every band message, under one
guard epoch) and the tick is inside every band of its asset, is not the asset's first, does not flip its
staleness, is not due as its heartbeat, and no trigger of the asset is held (a fresh tick releases those). An
asset without a band has no armed trigger: its price ticks are left out too. Every other tick, and every
STALE, MARKET_RESOLVED and TICK_SIZE_CHANGE tick, goes out.

Guard's bands change with the ticks it reads (a price above a trailing stop's mark lifts it and raises its
stop level), so a band guard wrote before it read a tick ingest sent may be too wide for what followed. Ingest
remembers every fresh price it sends, whatever the kind of tick and the reason it went out, with every price
source (best bid, mid and last trade, whichever the band watched then), until a message says guard has read
the tick (``through_ns``), and narrows the band of the tick's asset by each (:func:`common.bands.after_rise`:
guard lifts its trailing marks to every fresh price it reads, also one it reads too late to fire on, and holds
instead of firing a take-profit such a price crosses); a price stamped before the band's ``armed_ns`` for its
source raises only the band's ``lo`` (:func:`common.bands.after_older_rise`: guard lifts by it the marks of the
stops armed before it, not of the later ones, and a higher ``hi`` would leave out their new highs after the arm).
A left-out price sent again (:meth:`TickGate.replay`) raises only the ``lo`` too: guard may leave it alone
(``services.guard.domain.tick_view.replay_refused``), and then lifts no mark by it.
Those are the *unread prices*; a band received meanwhile is narrowed by them again, and a band whose narrowing
ends as guard reads them is checked against the current top like a changed one. Ticks that go out carry strictly
increasing ``received_time_ns`` stamps, so ``through_ns`` says exactly which of them guard has read. A new guard
process reads the log from where it took its cursor and says so in its first ``through_ns`` (the stamp of the
newest tick then): the unread prices up to it are forgotten, since that process never reads them (all of them when
it says 0).

A band that brings a trigger change the gate had not seen makes the fresh prices it left out since the change due
for a second look against it (``services.ingest.leftout``, :meth:`TickGate.replay`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from common.bands import AssetBand, BandMessage, BandMeta, decode, outside
from services.ingest.leftout import LeftOut, crossing
from services.ingest.unread import (
    BEFORE_ARMS,
    EVERY,
    KEPT,
    Merged,
    Top,
    Unread,
    as_prices,
    higher,
    narrowed,
    narrowed_by,
    prices_of,
    sent_again,
)
from tradingtools.market.v1 import market_pb2 as mpb

PRICE_KINDS = frozenset({mpb.TICK_KIND_PRICE_CHANGE, mpb.TICK_KIND_BEST_BID_ASK, mpb.TICK_KIND_BOOK,
                         mpb.TICK_KIND_LAST_TRADE_PRICE})


# The stamps of the unread prices in the order they were given, (stamp, asset id): a ``through_ns`` visits only the
# assets it reads (at 10,000 ticks/s and a guard a second behind, thousands of assets hold unread prices). Entries of
# prices merged or forgotten stay until read past; beyond this many (guard not reading), it is rebuilt.
_ORDER_MIN = 4096


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
    replayed: int = 0


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
        self._rises: dict[str, Unread] = {}  # asset -> its fresh prices sent that guard has not read
        self._order: deque[tuple[int, str]] = deque()  # their stamps in stamp order (_ORDER_MIN)
        self._order_max = _ORDER_MIN
        self._epoch: str | None = None  # the guard process whose bands were last read
        self.left = LeftOut()  # fresh prices left out, looked at again when a band lands after its triggers changed

    # ticks

    def admit(self, asset_id: str, kind: int, top: Top, recv_ns: int) -> int:
        """0 when the tick is left out, else the ``received_time_ns`` it goes out with."""
        if kind not in PRICE_KINDS:
            self.stats.other_kinds += 1
            return self._send(asset_id, top, recv_ns, None)
        stale = top[4]
        if recv_ns >= self.valid_until_ns:
            self.stats.unguarded += 1
            return self._send(asset_id, top, recv_ns, None)
        last = self._last.get(asset_id)
        if last is None or last[1] != stale:
            self.stats.first += 1
            return self._send(asset_id, top, recv_ns, None)
        band = self.bands.get(asset_id)
        if band is None:  # no armed trigger on the asset
            if recv_ns - last[0] >= self.heartbeat_ns:
                self.stats.heartbeat += 1
                return self._send(asset_id, top, recv_ns, None)
            self.stats.filtered += 1
            if not stale:
                self.left.leave(asset_id, top, recv_ns)
            return 0
        # the mid costs a division: computed only when a band watches it (_send computes it for a tick sent)
        prices = prices_of(top) if band.sources[-1].source == 1 or len(band.sources) > 1 else [top[0], None, top[2]]
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
            return self._send(asset_id, top, recv_ns, prices, rising)
        if band.holds and not stale:
            self.stats.held += 1
            return self._send(asset_id, top, recv_ns, prices, False)
        if recv_ns - last[0] >= self.heartbeat_ns:
            self.stats.heartbeat += 1
            return self._send(asset_id, top, recv_ns, prices, False)
        self.stats.filtered += 1
        if not stale:
            self.left.leave(asset_id, top, recv_ns)
        return 0

    def recheck(self, asset_id: str, top: Top, now_ns: int) -> int:
        """After the asset's band changed: the stamp of a tick of its current top when that is outside the new band
        (or something is held and the book is fresh), else 0."""
        band = self.bands.get(asset_id)
        if band is None or now_ns >= self.valid_until_ns:
            return 0
        prices, beyond, _rising = crossing(band, top)
        if not (beyond or band is EVERY or (band.holds and not top[4])):
            return 0
        self.stats.rechecked += 1
        return self._send(asset_id, top, now_ns, prices)

    def replay(self, asset_id: str, now_ns: int) -> list[tuple[int, Top, int]]:
        """After the asset's band changed: the prices left out since a trigger change it brought, after the asset's
        last tick sent (unless that was STALE: none), that are outside the new band (``services.ingest.leftout``);
        each as (the stamp it goes out with now, its top, when it was received), in received order."""
        last = self._last.get(asset_id)
        due = self.left.due(asset_id, now_ns, last[0] if last is not None else 0)
        if not due or (last is not None and last[1]):
            return []
        out = []
        for recv_ns, top in due:
            band = self.bands.get(asset_id)
            if band is None or band is EVERY:
                break
            prices, beyond, rising = crossing(band, top)
            if beyond:
                self.stats.replayed += 1
                out.append((self._send(asset_id, top, now_ns, prices, rising, again=True), top, recv_ns))
        return out

    def _send(self, asset_id: str, top: Top, recv_ns: int, prices: list[Decimal | None] | None,
              rising: bool = True, *, again: bool = False) -> int:
        """Stamp a tick that goes out. A fresh one's prices are kept as unread, and narrow the asset's band until
        guard has read the tick (``prices``: the band's, when computed already; ``rising``: False when none is above
        the band, which they then leave as it is; ``again``: a left-out price sent again, which guard may leave alone:
        it raises only the band's lo)."""
        stamp = recv_ns if recv_ns > self.floor_ns else self.floor_ns + 1
        self.floor_ns = stamp
        stale = top[4]
        self._last[asset_id] = (stamp, stale)
        if not stale:
            item: Top | Merged = Merged(prices if prices is not None else prices_of(top), stamp, True) if again else top
            unread = self._rises.get(asset_id)
            if unread is None:
                self._rises[asset_id] = [(stamp, item)]
            else:
                unread.append((stamp, item))
                if len(unread) > KEPT:
                    (first, older), (later, newer) = unread[0], unread[1]
                    merged = [higher(a, b) for a, b in zip(as_prices(older), as_prices(newer), strict=True)]
                    unread[0:2] = [(later, Merged(merged, older.first if isinstance(older, Merged) else first,
                                                  sent_again(older) or sent_again(newer)))]
            order = self._order
            order.append((stamp, asset_id))
            if len(order) > self._order_max:
                self._rebuild_order()
            if rising:
                band = self.bands.get(asset_id)
                if band is not None and band is not EVERY:
                    self.bands[asset_id] = narrowed(band, prices if prices is not None else prices_of(top),
                                                    BEFORE_ARMS if again else stamp)
        return stamp

    def forget(self, assets: set[str]) -> None:
        """Forget what was kept about assets no longer followed."""
        last, rises = self._last, self._rises
        self.left.forget(assets)
        for asset_id in assets:
            last.pop(asset_id, None)
            rises.pop(asset_id, None)

    def _rebuild_order(self) -> None:
        """The stamp order of the unread prices still kept (merged and forgotten ones dropped)."""
        kept = sorted((stamp, asset_id) for asset_id, unread in self._rises.items() for stamp, _item in unread)
        self._order = deque(kept)
        self._order_max = max(_ORDER_MIN, 2 * len(kept))

    # bands

    def load(self, meta: BandMeta | None, encoded: dict[str, str], now_ns: int) -> list[str]:
        """Bands read whole (at start, after a reconnect or when a message asks for it); returns their assets.
        Without meta (no guard publishing), every tick goes out. Another guard process (a new epoch) reads the
        log from where it took its cursor, which its first ``through_ns`` gives: the unread prices up to it are
        forgotten (all of them when it gives 0, saying nothing); while some are newer (sent after it took its
        cursor, or lost with a log it found empty), its bands are not trusted until it has read past them."""
        self.stats.loads += 1
        before, self.published = self.published, {}
        self.bands = {}
        if meta is None or not self.enabled:
            self.meta = None
            self.valid_until_ns = 0
            return []
        for asset_id, text in encoded.items():
            band = self.published[asset_id] = self._decode(text)
            self.left.changed(asset_id, before.get(asset_id), band)
        if meta.epoch != self._epoch and self._epoch is not None:
            if meta.through_ns <= 0:
                self._rises.clear()
                self._order.clear()
            elif self._rises and (newest := max(u[-1][0] for u in self._rises.values())) > meta.through_ns:
                # sent before the new guard took its cursor, or lost with the log it reads: every tick goes out
                # until it has read past them
                self.trust_after_ns = max(self.trust_after_ns, newest)
        self._epoch = meta.epoch
        self.meta = meta
        self._renew(meta, now_ns)
        self._read_through(meta.through_ns)
        for asset_id in self.published:
            self._effective(asset_id)
        return list(self.published)

    def apply(self, msg: BandMessage, now_ns: int) -> list[str] | None:
        """A band message; returns the assets whose band changed (guard's, or ingest's narrowing of it dropped as
        guard read the ticks behind it), or None when the bands must be read whole (another epoch, a reset, a
        message missed)."""
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
                band = self._decode(text)
                self.left.changed(asset_id, self.published.get(asset_id), band)
                self.published[asset_id] = band
            else:
                self.published.pop(asset_id, None)
            changed.append(asset_id)
        dropped = self._read_through(msg.meta.through_ns)
        for asset_id in changed:
            self._effective(asset_id)
        if dropped:
            bands = msg.bands
            changed.extend(a for a in dropped if a not in bands and a in self.published)
        return changed

    def unguarded(self) -> None:
        """Bands unknown (the subscription broke): every tick goes out until they are read again."""
        self.meta = None
        self.valid_until_ns = 0

    def _renew(self, meta: BandMeta, now_ns: int) -> None:
        trusted = meta.through_ns >= self.trust_after_ns
        self.valid_until_ns = now_ns + int(meta.lease_s * 1e9) if trusted else 0

    def _read_through(self, through_ns: int) -> list[str]:
        """Guard has read every tick stamped up to ``through_ns`` (or never will: a new guard process): what they
        did to guard's marks is in the bands it wrote, their prices narrow the band no more. Returns the assets
        whose band that widened (their current top is checked against it, as after a change)."""
        order, rises = self._order, self._rises
        read: dict[str, None] = {}
        while order and order[0][0] <= through_ns:
            read[order.popleft()[1]] = None
        done = []
        for asset_id in read:
            unread = rises.get(asset_id)
            if unread is None or unread[0][0] > through_ns:  # forgotten, or a merged price's later stamp not read
                continue
            n = 1
            while n < len(unread) and unread[n][0] <= through_ns:
                n += 1
            del unread[:n]
            done.append(asset_id)
        widened = []
        bands = self.bands
        for asset_id in done:
            if not rises[asset_id]:
                del rises[asset_id]
            before = bands.get(asset_id)
            self._effective(asset_id)
            if bands.get(asset_id) != before:
                widened.append(asset_id)
        return widened

    def _effective(self, asset_id: str) -> None:
        band = self.published.get(asset_id)
        if band is None:
            self.bands.pop(asset_id, None)
            return
        unread = self._rises.get(asset_id)
        self.bands[asset_id] = band if unread is None or band is EVERY else narrowed_by(band, unread)

    def _decode(self, text: str) -> AssetBand:
        try:
            band = decode(text)
        except ValueError:
            self.stats.bad_bands += 1
            return EVERY
        return band if band.sources else EVERY
