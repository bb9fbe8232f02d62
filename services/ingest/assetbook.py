"""One asset's order book: levels kept as dicts plus sorted price lists, and each level's stored bytes (pure).

Wire order is bids ascending / asks descending (best = last element); :class:`BookSnapshot` stores
levels best-first.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal

import orjson

from common.marketstate import BookSnapshot
from services.ingest.levelbytes import JSON_BOOL, level_json, levels_json, number_bytes

DEFAULT_TICK = Decimal("0.01")
PENDING_MAX = 10_000  # levels whose changes a book keeps while it waits for a snapshot

Top = tuple[Decimal | None, Decimal | None, Decimal | None, Decimal, bool]


class AssetBook:
    """One asset's book: levels price → size in ``bids`` / ``asks``, their prices also kept sorted ascending.

    Plain dicts plus sorted lists maintained with :mod:`bisect` (a C memmove): several times cheaper per
    level change than a ``SortedDict`` for books of a few hundred levels.
    """

    def __init__(self, asset_id: str) -> None:
        self.asset_id = asset_id
        self.condition_id = ""
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self._bid_px: list[Decimal] = []  # sorted ascending
        self._ask_px: list[Decimal] = []  # sorted ascending
        # each level as stored in Redis (b'["0.5","10"]'), best first: a snapshot is two joins
        self._bid_js: list[bytes] = []  # descending price: _bid_js[j] is _bid_px[-1 - j]
        self._ask_js: list[bytes] = []  # ascending price, as _ask_px
        self._head = b""  # b'{"assetId":...,"conditionId":...' for ``_head_cid``
        self._head_cid: str | None = None
        self._session_json = b'""'  # the feed session as JSON for ``_session_of``
        self._session_of = ""
        self.synced = False
        self.unsynced_since_ms = 0  # when this wait for a snapshot was first seen (0: not yet), see awaiting_snapshot
        self.tick_size = DEFAULT_TICK
        self.tick_known = False  # tick_size came from the venue (a book frame or tick_size_change), not the default
        self.tick_ms = self.trade_ms = 0  # venue times of tick_size and last_trade_price: an older snapshot's lose
        self.last_trade_price: Decimal | None = None
        self.hint_bid: Decimal | None = None
        self.hint_ask: Decimal | None = None
        self.venue_ms = 0
        self.snapshot_ms = 0  # venue time of the last snapshot: older deltas are already in it
        # (side, price) -> (venue ms, size): each level's last change out of sync (a book's venue times do not go back)
        self.pending: dict[tuple[str, Decimal], tuple[int, Decimal]] = {}
        self.pending_lost_ms = 0  # the newest venue time of a change dropped from ``pending`` (bounded)
        self.updated_ms = 0
        self.stale = False
        self.winner = ""
        self.emitted: Top | None = None

    @property
    def best_bid(self) -> Decimal | None:
        """Highest bid (from the book once a snapshot arrived, else the venue's hint)."""
        if self.synced:
            return self._bid_px[-1] if self._bid_px else None
        return self.hint_bid

    @property
    def best_ask(self) -> Decimal | None:
        """Lowest ask (from the book once a snapshot arrived, else the venue's hint)."""
        if self.synced:
            return self._ask_px[0] if self._ask_px else None
        return self.hint_ask

    def top(self) -> Top:
        """What a price tick reports."""
        if self.synced:  # best_bid / best_ask inline: this runs for every change
            bids, asks = self._bid_px, self._ask_px
            return (bids[-1] if bids else None, asks[0] if asks else None, self.last_trade_price, self.tick_size,
                    self.stale)
        return (self.hint_bid, self.hint_ask, self.last_trade_price, self.tick_size, self.stale)

    def set_level(self, side: str, price: Decimal, size: Decimal) -> None:
        """Set a level's aggregate size; 0 removes it."""
        bid = side == "BUY"
        if bid:
            levels, prices, js = self.bids, self._bid_px, self._bid_js
        else:
            levels, prices, js = self.asks, self._ask_px, self._ask_js
        if not size:
            if levels.pop(price, None) is not None:
                i = bisect_left(prices, price)
                del prices[i]
                del js[len(prices) - i if bid else i]
        else:
            n = len(levels)
            levels[price] = size  # one hash of the Decimal key: a new level grows the dict
            i = bisect_left(prices, price)
            if len(levels) != n:
                prices.insert(i, price)
                js.insert(n - i if bid else i, level_json(price, size))
            else:
                js[n - 1 - i if bid else i] = level_json(price, size)

    def hold(self, venue_ms: int, side: str, price: Decimal, size: Decimal) -> None:
        """Keep a change received out of sync for the next snapshot (maybe older: a REST /book); bounded."""
        self.pending.pop((side, price), None)  # changed again: last in line, the least recently changed go first
        self.pending[side, price] = (venue_ms, size)
        if len(self.pending) > PENDING_MAX:
            lost = [self.pending.pop(k)[0] for k in list(self.pending)[:PENDING_MAX // 2 or 1]]
            self.pending_lost_ms = max(self.pending_lost_ms, *lost)

    def unsync(self) -> None:
        """Out of sync: levels wait for a snapshot, the venue hints of before are not served meanwhile."""
        self.synced, self.unsynced_since_ms = False, 0
        self.hint_bid = self.hint_ask = None
        self.pending, self.pending_lost_ms = {}, 0

    def replace(self, bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal]) -> None:
        """Replace both sides (a snapshot); zero sizes must already be left out. A level the book already held
        with the same size keeps its stored bytes (a snapshot mostly repeats the book it replaces)."""
        bid_px, ask_px = sorted(bids), sorted(asks)
        old_bids = zip(reversed(self._bid_px), self._bid_js, strict=True)
        self._bid_js = levels_json(reversed(bid_px), bids, self.bids, old_bids)
        self._ask_js = levels_json(ask_px, asks, self.asks, zip(self._ask_px, self._ask_js, strict=True))
        self.bids, self.asks = bids, asks
        self._bid_px, self._ask_px = bid_px, ask_px

    def snapshot(self, depth: int, session: str = "") -> BookSnapshot:
        """Best-first snapshot for Redis, kept by the feed ``session`` (no levels and ``snapshot`` False while
        out of sync)."""
        if self.synced:
            levels = self.bids
            bids = tuple([(p, levels[p]) for p in reversed(self._bid_px[-depth:])])
            levels = self.asks
            asks = tuple([(p, levels[p]) for p in self._ask_px[:depth]])
        else:
            bids = asks = ()
        return BookSnapshot(self.asset_id, self.condition_id, bids, asks, self.tick_size, self.venue_ms,
                            self.updated_ms, self.last_trade_price, self.synced, session, self.tick_known)

    def snapshot_json(self, depth: int, session: str = "") -> bytes:
        """``self.snapshot(depth, session).to_json()``, built from each level's stored bytes (this runs for every
        changed book at every flush: several times cheaper than building and encoding the snapshot)."""
        if self._head_cid != self.condition_id:
            self._head = b'{"assetId":%s,"conditionId":%s' % (orjson.dumps(self.asset_id),
                                                             orjson.dumps(self.condition_id))
            self._head_cid = self.condition_id
        if self.synced:
            js = self._bid_js
            bids = b",".join(js[:depth] if 0 < depth < len(js) else js)
            js = self._ask_js
            asks = b",".join(js[:depth] if 0 < depth < len(js) else js)
        else:
            bids = asks = b""
        last = self.last_trade_price
        if self._session_of != session:
            self._session_json, self._session_of = orjson.dumps(session), session
        return (b'%s,"bids":[%s],"asks":[%s],"tickSize":"%s","venueTimeMs":%d,"updatedMs":%d,"lastTradePrice":"%s",'
                b'"snapshot":%s,"session":%s,"tickKnown":%s}') % (
            self._head, bids, asks, number_bytes(self.tick_size), self.venue_ms, self.updated_ms,
            b"" if last is None else number_bytes(last), JSON_BOOL[self.synced], self._session_json,
            JSON_BOOL[self.tick_known])
