"""CLOB market-channel messages parsed into values. A ``book`` event has the shape of a REST ``/book`` body:
both are :func:`common.clob_rest.parse_book`'s, as are the level, price and tick readers and their caches."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from common.clob_rest import PRICE_CACHE, SIZE_CACHE, BookMsg, asset, parse_book, price_or_none, size_or_none, tick
from common.memo import Memo
from services.ingest import model as m

_PRICES = PRICE_CACHE.hot
_SIZES = SIZE_CACHE.hot
# market ids as received -> lowercased: a market's frames cost a lookup, not a scan and a new string each
_MARKETS: Memo[str, str] = Memo(4096)
_MARKETS_HOT = _MARKETS.hot


class LevelChange(NamedTuple):
    """One level's new aggregate size (0 removes it); ``side`` BUY = bid level, SELL = ask level.

    A named tuple: a busy market sends thousands a second, and a tuple builds several times faster.
    """

    asset_id: str
    side: str
    price: Decimal
    size: Decimal | None
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceChangeMsg:
    """Level changes (v2 ``price_changes``, v1 ``changes`` or v0 flat), possibly for several assets."""

    market: str
    changes: tuple[LevelChange, ...]
    venue_ms: int


@dataclass(frozen=True, slots=True)
class LastTradeMsg:
    """A trade printed on an asset (the taker's side and size; no wallet)."""

    asset_id: str
    market: str
    price: Decimal
    size: Decimal | None
    side: str
    venue_ms: int


@dataclass(frozen=True, slots=True)
class TickSizeMsg:
    """The market's tick size changed."""

    asset_id: str
    market: str
    new_tick_size: Decimal
    venue_ms: int


@dataclass(frozen=True, slots=True)
class BestBidAskMsg:
    """Top of book (custom feature)."""

    asset_id: str
    market: str
    best_bid: Decimal | None
    best_ask: Decimal | None
    venue_ms: int


@dataclass(frozen=True, slots=True)
class ResolvedMsg:
    """The market resolved; ``winning_asset_id`` won (``services.ingest.resolution`` decides whether it is a
    clear winner)."""

    market: str
    asset_ids: tuple[str, ...]
    winning_asset_id: str
    venue_ms: int
    winning_outcome: str = ""


@dataclass(frozen=True, slots=True)
class IgnoredMsg:
    """A message the book state does not use (``new_market``, unknown event types)."""

    event_type: str


ClobMsg = BookMsg | PriceChangeMsg | LastTradeMsg | TickSizeMsg | BestBidAskMsg | ResolvedMsg | IgnoredMsg


def _change(d: dict[str, Any], asset_id: str) -> LevelChange:
    # Thousands a second: strings already seen are looked up inline, anything else takes the checked path.
    get = d.get
    raw = get("price")
    price = _PRICES.get(raw) if raw.__class__ is str else None
    if price is None:
        price = price_or_none(d, "price")
        if price is None:
            raise m.ParseError(m.MISSING_FIELD, "price")
    raw = get("size")
    size = _SIZES.get(raw) if raw.__class__ is str else None
    if size is None and raw is not None:
        size = size_or_none(d, "size")
    side = get("side")
    if side != "BUY" and side != "SELL":
        side = m.side(d, "side")
    raw = get("best_bid")
    best_bid = _PRICES.get(raw) if raw.__class__ is str else None
    if best_bid is None and raw is not None:
        best_bid = price_or_none(d, "best_bid")
    raw = get("best_ask")
    best_ask = _PRICES.get(raw) if raw.__class__ is str else None
    if best_ask is None and raw is not None:
        best_ask = price_or_none(d, "best_ask")
    return LevelChange(asset_id, side, price, size, best_bid, best_ask)


def _asset_of(d: dict[str, Any]) -> str:
    value = d.get("asset_id")
    if value.__class__ is str and 0 < len(value) <= 100:
        return value
    return asset(d, "asset_id")


def _millis(d: dict[str, Any]) -> int:
    """``timestamp`` in milliseconds: a plain digit string directly, anything else through the checked path."""
    raw = d.get("timestamp")
    if raw.__class__ is str and 0 < len(raw) < 16 and raw.isascii() and raw.isdigit():
        value = int(raw)
        if value < m.MAX_MS:
            return value
    return m.millis(d, "timestamp")


_new_tuple = tuple.__new__


def _changes_seen(raw: Any) -> tuple[LevelChange, ...] | None:
    """v2 ``price_changes`` whose every value is a string parsed before (``size``, ``best_bid`` and ``best_ask``
    may be null), else None.

    The feed's hot path: plain lookups, no checks beyond what a cache hit already proves (only valid
    strings are cached). Anything else returns None and the caller takes the checked path, which gives
    the same values or the same error."""
    prices, sizes = _PRICES, _SIZES  # subscripts, not .get: a miss (or a field absent) raises, once
    out: list[LevelChange] = []
    append = out.append
    try:
        for c in raw:
            price, size, best_bid, best_ask = prices[c["price"]], c["size"], c["best_bid"], c["best_ask"]
            if size is not None:
                size = sizes[size]
            if best_bid is not None:
                best_bid = prices[best_bid]
            if best_ask is not None:
                best_ask = prices[best_ask]
            side, asset_id = c["side"], c["asset_id"]
            if ((side != "BUY" and side != "SELL") or asset_id.__class__ is not str
                    or not 0 < len(asset_id) <= 100):
                return None
            append(_new_tuple(LevelChange, (asset_id, side, price, size, best_bid, best_ask)))
    except (KeyError, TypeError, AttributeError):  # not cached, absent, not an object, unhashable: the checked path
        return None
    return tuple(out)


def _plain(value: Any, max_len: int) -> bool:
    """A string ``fields.text`` would return unchanged: ASCII, no NUL, at most ``max_len`` long."""
    return value.__class__ is str and len(value) <= max_len and value.isascii() and "\x00" not in value


def parse_price_change(d: dict[str, Any]) -> PriceChangeMsg:
    """A ``price_change`` in the current (v2) or either legacy schema."""
    market: Any = d.get("market")
    lower = _MARKETS_HOT.get(market) if market.__class__ is str else None
    if lower is not None:
        market = lower
    elif _plain(market, 2000):
        market = _MARKETS.put(market, market.lower())
    else:
        market = m.text(d, "market").lower()
    venue_ms = _millis(d)
    if "price_changes" in d:
        raw = d["price_changes"]
        if raw.__class__ is list:
            seen = _changes_seen(raw)
            if seen is not None:
                return PriceChangeMsg(market, seen, venue_ms)
        if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
            raise m.ParseError(m.BAD_FIELD, "price_changes must be an array of objects")
        return PriceChangeMsg(market, tuple([_change(c, _asset_of(c)) for c in raw]), venue_ms)
    asset_id = asset(d, "asset_id")
    if "changes" in d:
        raw = d["changes"]
        if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
            raise m.ParseError(m.BAD_FIELD, "changes must be an array of objects")
        return PriceChangeMsg(market, tuple([_change(c, asset_id) for c in raw]), venue_ms)
    return PriceChangeMsg(market, (_change(d, asset_id),), venue_ms)


def parse_last_trade(d: dict[str, Any]) -> LastTradeMsg:
    """A ``last_trade_price`` (one per trade of a followed market: thousands a second when markets are busy).

    Prices seen before and plain strings are taken inline; anything else goes through the checked readers,
    which give the same values or the same error (``last_trade_checked``)."""
    get = d.get
    raw = get("price")
    price = _PRICES.get(raw) if raw.__class__ is str else None
    asset_id = get("asset_id")
    market: Any = get("market")
    side = get("side")
    if (price is None or not _plain(asset_id, 100) or not asset_id or not _plain(market, 2000)
            or (side != "BUY" and side != "SELL")):
        return last_trade_checked(d)
    raw = get("size")
    size = _SIZES.get(raw) if raw.__class__ is str else None  # a size cached is one m.decimal reads the same
    if size is None and raw is not None:
        size = m.decimal(d, "size", required=False)
    return LastTradeMsg(asset_id, market.lower(), price, size, side, _millis(d))


def last_trade_checked(d: dict[str, Any]) -> LastTradeMsg:
    """:func:`parse_last_trade` through the checked readers only."""
    price = price_or_none(d, "price")
    if price is None:
        raise m.ParseError(m.MISSING_FIELD, "price")
    return LastTradeMsg(asset(d, "asset_id"), m.text(d, "market").lower(), price,
                        m.decimal(d, "size", required=False), m.side(d, "side", required=False),
                        m.millis(d, "timestamp"))


def parse_event(d: dict[str, Any]) -> ClobMsg:
    """One market-channel event, dispatched on ``event_type``; unknown types are ignored, not errors."""
    kind = d.get("event_type")
    if kind == "book":
        return parse_book(d)
    if kind == "price_change":
        return parse_price_change(d)
    if kind == "last_trade_price":
        return parse_last_trade(d)
    if kind == "tick_size_change":
        new = tick(d, "new_tick_size")
        if new is None:
            raise m.ParseError(m.MISSING_FIELD, "new_tick_size")
        return TickSizeMsg(asset(d, "asset_id"), m.text(d, "market").lower(), new, m.millis(d, "timestamp"))
    if kind == "best_bid_ask":
        return BestBidAskMsg(asset(d, "asset_id"), m.text(d, "market").lower(), price_or_none(d, "best_bid"),
                             price_or_none(d, "best_ask"), m.millis(d, "timestamp"))
    if kind == "market_resolved":
        ids = d.get("assets_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise m.ParseError(m.BAD_FIELD, "assets_ids must be an array of strings")
        return ResolvedMsg(m.text(d, "market").lower(), tuple(ids), m.text(d, "winning_asset_id"),
                           m.millis(d, "timestamp"), m.text(d, "winning_outcome", max_len=200))
    if not isinstance(kind, str):
        raise m.ParseError(m.MISSING_FIELD, "event_type")
    return IgnoredMsg(kind)
