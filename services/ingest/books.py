"""Order books of watched assets, kept from CLOB snapshots and deltas (pure: time is passed in).

Wire order is bids ascending / asks descending (best = last element); :class:`BookSnapshot` stores
levels best-first. A tick goes out only when the top of book (best bid/ask, last trade, tick size,
staleness) changes, or on tick-size changes and resolutions; depth changes update the snapshot only.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal
from typing import NamedTuple

from common.decimals import fmt_memo
from services.ingest import clob
from services.ingest.assetbook import PENDING_MAX, AssetBook, Top
from services.ingest.levelbytes import LEVEL_JSON, level_json, mid_text
from tradingtools.market.v1 import market_pb2 as mpb

__all__ = ["PENDING_MAX", "AssetBook", "BookState", "Touched"]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_LEVELS = LEVEL_JSON.hot
_PRICE_CHANGE = mpb.TICK_KIND_PRICE_CHANGE
_new_tuple = tuple.__new__  # a Touched without its Python-level __new__ (this runs for every change)


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

    def left_out_tick(self, asset_id: str, top: Top, received_ns: int, observed_ns: int) -> bytes:
        """A price-change tick of an earlier top of the asset's book, one the tick gate left out when it came at
        ``observed_ns`` and sends again now (stamped ``received_ns``), serialized; its venue time is not known (0)."""
        book = self.books[asset_id]
        bid, ask, last, tick_size, stale = top
        tick = mpb.PriceTick(
            asset_id=asset_id, condition_id=book.condition_id, kind=mpb.TICK_KIND_PRICE_CHANGE, best_bid=_s(bid),
            best_ask=_s(ask), mid=mid_text(bid, ask) if bid is not None and ask is not None else "",
            last_trade_price=_s(last), tick_size=_s(tick_size), stale=stale, received_time_ns=received_ns,
            observed_time_ns=observed_ns)
        return tick.SerializeToString()

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
        venue_ms, market, books = msg.venue_ms, msg.market, self.books
        run = None  # the asset of the change before: a message lists an asset's changes together
        book: AssetBook | None = None
        synced = False
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        bid_px: list[Decimal] = []
        ask_px: list[Decimal] = []
        bid_js: list[bytes] = []
        ask_js: list[bytes] = []
        for asset_id, side, price, size, best_bid, best_ask in msg.changes:
            if asset_id != run:
                run = asset_id
                if asset_id in touched:  # seen before (None: not tracked, or older than its book's snapshot)
                    book = touched[asset_id]
                else:  # _touch inline
                    book = books.get(asset_id)
                    if book is not None and 0 < venue_ms < book.snapshot_ms:
                        book = None  # already in the snapshot: replayed, it would undo newer changes
                    elif book is not None:
                        if market:
                            book.condition_id = market
                        if venue_ms > book.venue_ms:
                            book.venue_ms = venue_ms
                        book.updated_ms = now_ms
                        book.stale = False
                    touched[asset_id] = book
                if book is None:
                    continue
                synced = book.synced
                bids, asks, bid_px, ask_px = book.bids, book.asks, book._bid_px, book._ask_px
                bid_js, ask_js = book._bid_js, book._ask_js
            elif book is None:
                continue
            if size is not None:
                if not synced:
                    book.hold(venue_ms, side, price, size)
                elif side == "BUY":  # AssetBook.set_level inline (the feed's bulk)
                    if not size:
                        if bids.pop(price, None) is not None:
                            i = bisect_left(bid_px, price)
                            del bid_px[i]
                            del bid_js[len(bid_px) - i]
                    else:
                        n = len(bids)
                        bids[price] = size
                        i = bisect_left(bid_px, price)
                        if len(bids) != n:
                            bid_px.insert(i, price)
                            bid_js.insert(n - i, _LEVELS.get((price, size)) or level_json(price, size))
                        else:
                            bid_js[n - 1 - i] = _LEVELS.get((price, size)) or level_json(price, size)
                elif not size:
                    if asks.pop(price, None) is not None:
                        i = bisect_left(ask_px, price)
                        del ask_px[i]
                        del ask_js[i]
                else:
                    n = len(asks)
                    asks[price] = size
                    i = bisect_left(ask_px, price)
                    if len(asks) != n:
                        ask_px.insert(i, price)
                        ask_js.insert(i, _LEVELS.get((price, size)) or level_json(price, size))
                    else:
                        ask_js[i] = _LEVELS.get((price, size)) or level_json(price, size)
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
            if b.synced:
                bid_px, ask_px = b._bid_px, b._ask_px
                bid, ask = bid_px[-1] if bid_px else None, ask_px[0] if ask_px else None
                if (b.hint_bid != bid or b.hint_ask != ask) and (
                        b.asset_id in hinted or (bid is not None and ask is not None and bid >= ask)):
                    # contradicted by the venue's best bid / ask (this message's, or any when crossed): a change missed
                    out.extend(self._lose(b))
                    continue
                top = (bid, ask, b.last_trade_price, b.tick_size, b.stale)
            else:
                top = (b.hint_bid, b.hint_ask, b.last_trade_price, b.tick_size, b.stale)
            emit = top != b.emitted  # _result inline
            if emit:
                b.emitted = top
            out.append(_new_tuple(Touched, (b.asset_id, _PRICE_CHANGE, emit)))
        return out

    @staticmethod
    def _result(book: AssetBook, kind: int, *, force: bool = False) -> Touched:
        top = book.top()
        emit = force or top != book.emitted
        if emit:
            book.emitted = top
        return _new_tuple(Touched, (book.asset_id, kind, emit))


def _s(value: Decimal | None) -> str:
    return "" if value is None else fmt_memo(value)
