"""Order books of watched assets, kept from CLOB snapshots and deltas (pure: time is passed in).

Wire order is bids ascending / asks descending (best = last element); :class:`BookSnapshot` stores
levels best-first. A tick goes out only when the top of book (best bid/ask, last trade, tick size,
staleness) changes, or on tick-size changes and resolutions; depth changes update the snapshot only.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal
from typing import NamedTuple

import orjson

from common.decimals import fmt_memo
from common.marketstate import BookSnapshot
from services.ingest import clob
from services.ingest.levelbytes import JSON_BOOL, level_json, levels_json, mid_text, number_bytes
from tradingtools.market.v1 import market_pb2 as mpb

DEFAULT_TICK = Decimal("0.01")
PENDING_MAX = 10_000  # levels whose changes a book keeps while it waits for a snapshot
_ZERO = Decimal(0)
_ONE = Decimal(1)

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


class Touched(NamedTuple):
    """An asset changed by a message: ``kind`` of tick and whether a tick must go out."""

    asset_id: str
    kind: int
    emit: bool


class BookState:
    """Books of the tracked assets; messages for other assets are ignored."""

    def __init__(self) -> None:
        self.books: dict[str, AssetBook] = {}
        self.desynced: list[str] = []  # books found out of sync since the caller last took them (REST resync)
        self.session = ""  # the feed session (socket connection) the books are kept in: stored with each book

    def track(self, asset_id: str) -> None:
        """Start keeping an asset's book (empty until its snapshot arrives)."""
        if asset_id not in self.books:
            self.books[asset_id] = AssetBook(asset_id)

    def forget(self, asset_id: str) -> None:
        """Stop keeping an asset's book."""
        self.books.pop(asset_id, None)

    def desync_all(self) -> None:
        """After a reconnect: every book waits for a fresh snapshot (:meth:`AssetBook.unsync`)."""
        for book in self.books.values():
            book.unsync()

    def feed_lost(self) -> list[Touched]:
        """The book socket is gone: every book is out of sync and stale until its next snapshot (one STALE tick
        each for those that were fresh); every one is stored again, as not snapshotted."""
        self.desync_all()
        out: list[Touched] = []
        for book in self.books.values():
            out.extend(self._go_stale(book) or (Touched(book.asset_id, mpb.TICK_KIND_STALE, False),))
        return out

    def awaiting_snapshot(self, now_ms: int, grace_ms: int) -> list[str]:
        """Books out of sync for more than ``grace_ms`` (since this was first asked about them after they lost
        sync): the socket did not send their snapshot, so they need a REST one."""
        out = []
        for book in self.books.values():
            if book.synced:
                continue
            if not book.unsynced_since_ms:
                book.unsynced_since_ms = now_ms
            elif now_ms - book.unsynced_since_ms > grace_ms:
                out.append(book.asset_id)
        return out

    def desync_market(self, market: str) -> list[Touched]:
        """A message about ``market`` could not be applied: its books are out of sync (:meth:`_lose`)."""
        out = []
        for book in self.books.values():
            if market and book.condition_id == market:
                out.extend(self._lose(book))
        return out

    def take_desynced(self) -> list[str]:
        """Assets found out of sync since the last call (to resync from REST)."""
        out, self.desynced = self.desynced, []
        return out

    def apply(self, msg: clob.ClobMsg, now_ms: int) -> list[Touched]:
        """Apply one message; returns the assets it changed."""
        if type(msg) is clob.PriceChangeMsg:  # the feed's bulk first (no class derives from it)
            return self._price_change(msg, now_ms)
        if isinstance(msg, clob.BookMsg):
            return self._book(msg, now_ms)
        if isinstance(msg, clob.LastTradeMsg):
            book = self._touch(msg.asset_id, msg.market, msg.venue_ms, now_ms, top=False)
            if book is None:
                return []
            book.last_trade_price, book.trade_ms = msg.price, max(book.trade_ms, msg.venue_ms)
            return [self._result(book, mpb.TICK_KIND_LAST_TRADE_PRICE)]
        if isinstance(msg, clob.TickSizeMsg):
            book = self._touch(msg.asset_id, msg.market, msg.venue_ms, now_ms, top=False)
            if book is None:
                return []
            book.tick_size, book.tick_known, book.tick_ms = msg.new_tick_size, True, max(book.tick_ms, msg.venue_ms)
            return [self._result(book, mpb.TICK_KIND_TICK_SIZE_CHANGE, force=True)]
        if isinstance(msg, clob.BestBidAskMsg):
            book = self._touch(msg.asset_id, msg.market, msg.venue_ms, now_ms)
            if book is None:
                return []
            # "0" / "1" mean an empty side here too (no level can be priced 0 or 1), as in price_change
            book.hint_bid = msg.best_bid if msg.best_bid is not None and msg.best_bid > _ZERO else None
            book.hint_ask = msg.best_ask if msg.best_ask is not None and msg.best_ask < _ONE else None
            return [self._result(book, mpb.TICK_KIND_BEST_BID_ASK)]
        if isinstance(msg, clob.ResolvedMsg):
            out = []
            for asset_id in msg.asset_ids:
                book = self._touch(asset_id, msg.market, msg.venue_ms, now_ms, top=False)
                if book is not None:
                    book.winner = msg.winning_asset_id
                    out.append(self._result(book, mpb.TICK_KIND_MARKET_RESOLVED, force=True))
            return out
        return []

    def mark_stale(self, now_ms: int, max_age_ms: int) -> list[Touched]:
        """Books not updated within ``max_age_ms`` become stale; each emits one STALE tick."""
        return [t for book in self.books.values() if now_ms - book.updated_ms > max_age_ms
                for t in self._go_stale(book)]

    def price_tick(self, asset_id: str, kind: int, received_ns: int) -> mpb.PriceTick:
        """The tick describing an asset's top of book now."""
        book = self.books[asset_id]
        bid, ask = book.best_bid, book.best_ask
        mid = mid_text(bid, ask) if bid is not None and ask is not None else ""
        return mpb.PriceTick(
            asset_id=asset_id, condition_id=book.condition_id, kind=kind,  # type: ignore[arg-type]
            best_bid=_s(bid), best_ask=_s(ask), mid=mid, last_trade_price=_s(book.last_trade_price),
            tick_size=_s(book.tick_size), stale=book.stale,
            winning_asset_id=book.winner if kind == mpb.TICK_KIND_MARKET_RESOLVED else "",
            venue_time_ms=book.venue_ms, received_time_ns=received_ns)

    def tick_bytes(self, asset_id: str, kind: int, received_ns: int) -> bytes:
        """``self.price_tick(asset_id, kind, received_ns).SerializeToString()``."""
        return self.price_tick(asset_id, kind, received_ns).SerializeToString()

    def _touch(self, asset_id: str, market: str, venue_ms: int, now_ms: int, *, top: bool = True) -> AssetBook | None:
        """The tracked book of ``asset_id`` after a message about it; ``top``: the message says where the top of
        book is (a snapshot, level changes, best bid/ask), so a book out of sync is fresh again."""
        book = self.books.get(asset_id)
        if book is None:
            return None
        if market:
            book.condition_id = market
        if venue_ms > book.venue_ms:
            book.venue_ms = venue_ms
        book.updated_ms = now_ms
        if top or book.synced:
            book.stale = False
        return book

    def _lose(self, book: AssetBook) -> list[Touched]:
        """Out of sync: stale (one STALE tick) until a snapshot, and listed for a REST resync."""
        book.unsync()
        self.desynced.append(book.asset_id)
        return self._go_stale(book)

    def _go_stale(self, book: AssetBook) -> list[Touched]:
        """Mark a fresh book stale: its one STALE tick (none when it was stale already)."""
        if book.stale:
            return []
        book.stale = True
        return [self._result(book, mpb.TICK_KIND_STALE, force=True)]

    def _book(self, msg: clob.BookMsg, now_ms: int) -> list[Touched]:
        known = self.books.get(msg.asset_id)
        if known is not None and known.synced and 0 < msg.venue_ms < known.venue_ms:
            return []  # older than what the book already shows (a REST resync answered after a newer delta)
        book = self._touch(msg.asset_id, msg.market, msg.venue_ms, now_ms)
        if book is None:
            return []
        book.replace({p: s for p, s in msg.bids if s != 0}, {p: s for p, s in msg.asks if s != 0})
        book.synced = True
        book.snapshot_ms = msg.venue_ms
        pending, lost_ms, book.pending, book.pending_lost_ms = book.pending, book.pending_lost_ms, {}, 0
        if lost_ms and lost_ms >= msg.venue_ms:  # changes newer than the snapshot were dropped: not complete
            return self._lose(book)
        for (side, price), (venue_ms, size) in pending.items():  # received out of sync: those it lacks go over it
            if not venue_ms or venue_ms >= msg.venue_ms:  # (a change without a venue time: laid over too)
                book.set_level(side, price, size)
        kind = mpb.TICK_KIND_BOOK
        if msg.tick_size is not None and not 0 < msg.venue_ms < book.tick_ms:
            if book.tick_known and msg.tick_size != book.tick_size:
                # a new tick (a tick_size_change missed in a reconnect): published as one, market info follows it
                kind = mpb.TICK_KIND_TICK_SIZE_CHANGE
            book.tick_size, book.tick_known, book.tick_ms = msg.tick_size, True, max(book.tick_ms, msg.venue_ms)
        if msg.last_trade_price is not None and not 0 < msg.venue_ms < book.trade_ms:
            book.last_trade_price, book.trade_ms = msg.last_trade_price, max(book.trade_ms, msg.venue_ms)
        return [self._result(book, kind, force=kind == mpb.TICK_KIND_TICK_SIZE_CHANGE)]

    def _price_change(self, msg: clob.PriceChangeMsg, now_ms: int) -> list[Touched]:
        touched: dict[str, AssetBook | None] = {}
        hinted: set[str] = set()  # assets whose best bid and ask this message gives
        venue_ms = msg.venue_ms
        for asset_id, side, price, size, best_bid, best_ask in msg.changes:
            book = touched.get(asset_id)
            if book is None:
                if asset_id in touched:  # not tracked, or older than its book's snapshot
                    continue
                known = self.books.get(asset_id)
                if known is not None and 0 < venue_ms < known.snapshot_ms:
                    touched[asset_id] = None  # already in the snapshot: replayed, it would undo newer changes
                    continue
                book = touched[asset_id] = self._touch(asset_id, msg.market, venue_ms, now_ms)
                if book is None:
                    continue
            if size is not None:
                if book.synced:
                    book.set_level(side, price, size)
                else:
                    book.hold(venue_ms, side, price, size)
            if best_bid is not None:
                book.hint_bid = best_bid if best_bid > _ZERO else None
            if best_ask is not None:
                book.hint_ask = best_ask if best_ask < _ONE else None
                if best_bid is not None:
                    hinted.add(asset_id)
        out = []
        for b in touched.values():
            if b is None:
                continue
            bid, ask = b._bid_px[-1] if b._bid_px else None, b._ask_px[0] if b._ask_px else None
            if b.synced and (b.hint_bid != bid or b.hint_ask != ask) and (
                    b.asset_id in hinted or (bid is not None and ask is not None and bid >= ask)):
                # contradicted by the venue's best bid / ask (this message's, or any when crossed): a change missed
                out.extend(self._lose(b))
                continue
            out.append(self._result(b, mpb.TICK_KIND_PRICE_CHANGE))
        return out

    @staticmethod
    def _result(book: AssetBook, kind: int, *, force: bool = False) -> Touched:
        top = book.top()
        emit = force or top != book.emitted
        if emit:
            book.emitted = top
        return Touched(book.asset_id, kind, emit)


def _s(value: Decimal | None) -> str:
    return "" if value is None else fmt_memo(value)
