"""Simulated CLOB order books; every change is published as market-channel frames.

``levels`` returns best-first levels; ``consume`` takes liquidity like a marketable order (a BUY
walks the asks from the lowest, a SELL walks the bids from the highest) and publishes the
``price_change`` (v2) and ``last_trade_price`` frames it causes. Wire order in ``book`` frames is the
venue's: bids ascending, asks descending (best = last element). Call from the simulator's event loop.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.decimals import fmt

Level = tuple[Decimal, Decimal]
Publish = Callable[[str, dict[str, Any]], None]  # (asset_id, frame)


def _d(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SimBook:
    """One asset's book: price → size per side."""

    asset_id: str
    market: str = ""
    tick_size: Decimal = Decimal("0.01")
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    last_trade_price: Decimal | None = None

    def best_first(self) -> tuple[list[Level], list[Level]]:
        """(bids highest first, asks lowest first)."""
        return (sorted(self.bids.items(), key=lambda lv: lv[0], reverse=True),
                sorted(self.asks.items(), key=lambda lv: lv[0]))

    def best_prices(self) -> tuple[str, str]:
        """(best bid, best ask) as wire strings ("0" / "1" for an empty side), without sorting the book."""
        return (fmt(max(self.bids)) if self.bids else "0", fmt(min(self.asks)) if self.asks else "1")

    def frame(self, event_type: str = "book") -> dict[str, Any]:
        """A ``book`` frame (or REST body when ``event_type`` is ""), venue ordering."""
        bids, asks = self.best_first()
        out: dict[str, Any] = {
            "market": self.market, "asset_id": self.asset_id, "timestamp": str(_now_ms()),
            "hash": hashlib.sha1(f"{self.asset_id}{bids}{asks}".encode()).hexdigest(),
            "bids": [{"price": fmt(p), "size": fmt(s)} for p, s in reversed(bids)],
            "asks": [{"price": fmt(p), "size": fmt(s)} for p, s in reversed(asks)],
            "tick_size": fmt(self.tick_size),
            "last_trade_price": fmt(self.last_trade_price) if self.last_trade_price is not None else "",
        }
        if event_type:
            out["event_type"] = event_type
        return out


class SimBooks:
    """All simulated books; ``publish(asset_id, frame)`` receives every market-channel frame."""

    def __init__(self, publish: Publish | None = None) -> None:
        self.books: dict[str, SimBook] = {}
        self._listeners: list[Publish] = [publish] if publish else []

    def listen(self, publish: Publish) -> None:
        """Also send frames to ``publish``."""
        self._listeners.append(publish)

    def _emit(self, asset_id: str, frame: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener(asset_id, frame)

    def book(self, asset_id: str) -> SimBook:
        """The book of ``asset_id`` (created empty when unknown)."""
        return self.books.setdefault(asset_id, SimBook(asset_id))

    def set_book(self, asset_id: str, *, bids: Iterable[tuple[Any, Any]] = (), asks: Iterable[tuple[Any, Any]] = (),
                 market: str | None = None, tick_size: Any = None, emit: bool = True) -> None:
        """Replace a book (levels in any order) and publish its ``book`` snapshot."""
        book = self.book(asset_id)
        if market is not None:
            book.market = market
        if tick_size is not None:
            book.tick_size = _d(tick_size)
        book.bids = {_d(p): _d(s) for p, s in bids if _d(s) > 0}
        book.asks = {_d(p): _d(s) for p, s in asks if _d(s) > 0}
        if emit:
            self._emit(asset_id, book.frame())

    def levels(self, asset_id: str) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """(bids best-first, asks best-first) of an asset; empty for an unknown asset."""
        book = self.books.get(asset_id)
        if book is None:
            return (), ()
        bids, asks = book.best_first()
        return tuple(bids), tuple(asks)

    def set_level(self, asset_id: str, side: str, price: Any, size: Any) -> None:
        """Set one level's aggregate size (0 removes it) and publish the v2 ``price_change``."""
        book = self.book(asset_id)
        levels = book.bids if side == "BUY" else book.asks
        p, s = _d(price), _d(size)
        if s > 0:
            levels[p] = s
        else:
            levels.pop(p, None)
        self._emit(asset_id, self._price_change(book, [(side, p, s)]))

    def consume(self, asset_id: str, side: str, size: Any, *, limit_price: Any = None) -> list[Level]:
        """Take up to ``size`` shares like a marketable ``side`` order; returns the fills (price, size)."""
        book = self.book(asset_id)
        remaining = _d(size)
        limit = _d(limit_price) if limit_price is not None else None
        levels = book.asks if side == "BUY" else book.bids
        order = sorted(levels, reverse=(side == "SELL"))
        fills: list[Level] = []
        changes: list[tuple[str, Decimal, Decimal]] = []
        for price in order:
            if remaining <= 0:
                break
            if limit is not None and ((side == "BUY" and price > limit) or (side == "SELL" and price < limit)):
                break
            take = min(remaining, levels[price])
            fills.append((price, take))
            remaining -= take
            left = levels[price] - take
            if left > 0:
                levels[price] = left
            else:
                del levels[price]
            changes.append(("SELL" if side == "BUY" else "BUY", price, max(left, Decimal(0))))
        if changes:
            self._emit(asset_id, self._price_change(book, changes))
            book.last_trade_price = fills[-1][0]
            self._emit(asset_id, {"market": book.market, "asset_id": asset_id, "price": fmt(fills[-1][0]),
                                  "size": fmt(sum((s for _, s in fills), Decimal(0))), "fee_rate_bps": "0",
                                  "side": side, "timestamp": str(_now_ms()), "event_type": "last_trade_price"})
        return fills

    def tick_size_change(self, asset_id: str, new_tick_size: Any) -> None:
        """Change the tick size and publish ``tick_size_change``."""
        book = self.book(asset_id)
        old, book.tick_size = book.tick_size, _d(new_tick_size)
        self._emit(asset_id, {"asset_id": asset_id, "event_type": "tick_size_change", "market": book.market,
                              "new_tick_size": fmt(book.tick_size), "old_tick_size": fmt(old),
                              "timestamp": str(_now_ms())})

    def best_bid_ask(self, asset_id: str) -> None:
        """Publish a ``best_bid_ask`` for the asset's current top of book."""
        book = self.book(asset_id)
        bids, asks = book.best_first()
        bid = bids[0][0] if bids else Decimal(0)
        ask = asks[0][0] if asks else Decimal(1)
        self._emit(asset_id, {"event_type": "best_bid_ask", "market": book.market, "asset_id": asset_id,
                              "best_bid": fmt(bid), "best_ask": fmt(ask), "spread": fmt(ask - bid),
                              "timestamp": str(_now_ms())})

    def resolve(self, market: str, asset_ids: list[str], winning_asset_id: str, winning_outcome: str = "Yes") -> None:
        """Publish ``market_resolved`` to every asset of the market (``winning_asset_id`` "": a frame without a
        winner, as the venue may send)."""
        frame = {"event_type": "market_resolved", "id": "1", "market": market, "assets_ids": asset_ids,
                 "winning_asset_id": winning_asset_id, "winning_outcome": winning_outcome,
                 "timestamp": str(_now_ms())}
        for asset_id in asset_ids:
            self._emit(asset_id, frame)

    def _price_change(self, book: SimBook, changes: list[tuple[str, Decimal, Decimal]]) -> dict[str, Any]:
        best_bid, best_ask = book.best_prices()
        return {"market": book.market, "price_changes": [
            {"asset_id": book.asset_id, "price": fmt(p), "size": fmt(s), "side": side,
             "hash": hashlib.sha1(f"{book.asset_id}{p}{s}{time.time_ns()}".encode()).hexdigest(),
             "best_bid": best_bid, "best_ask": best_ask} for side, p, s in changes],
            "timestamp": str(_now_ms()), "event_type": "price_change"}
