"""CLOB market-channel messages and CLOB REST bodies (``/book``, ``/markets/{id}``) parsed into values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from common.marketstate import Level, MarketInfo
from services.ingest import model as m

_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class BookMsg:
    """A full book snapshot; ``bids``/``asks`` in wire order (best = last element)."""

    asset_id: str
    market: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    tick_size: Decimal | None
    last_trade_price: Decimal | None
    venue_ms: int
    min_order_size: Decimal | None = None
    neg_risk: bool | None = None


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


def asset(d: dict[str, Any], *keys: str) -> str:
    """A CLOB asset id: any non-empty string (subscriptions decide which ones matter)."""
    value = m.text(d, *keys, required=True, max_len=100)
    if not value:
        raise m.ParseError(m.MISSING_FIELD, keys[0])
    return value


# Prices sit on the tick grid and sizes repeat, so the same strings recur: each valid one is parsed
# once (only strings are cached: 1, 1.0 and True are equal dict keys).
_PRICES: dict[str, Decimal] = {}
_SIZES: dict[str, Decimal] = {}
_CACHE_MAX = 200_000


def price_or_none(d: dict[str, Any], key: str) -> Decimal | None:
    """A price in [0, 1] or None when absent."""
    return _remembered(d, key, _PRICES, lambda v: _ZERO <= v <= _ONE, "must be in [0, 1]")


def size_or_none(d: dict[str, Any], key: str) -> Decimal | None:
    """A size >= 0 or None when absent."""
    return _remembered(d, key, _SIZES, lambda v: v >= _ZERO, "must be >= 0")


def _remembered(d: dict[str, Any], key: str, cache: dict[str, Decimal], valid: Callable[[Decimal], bool],
                rule: str) -> Decimal | None:
    """``d[key]`` as a Decimal passing ``valid`` (BAD_FIELD naming ``rule`` otherwise), None when absent;
    valid string values are parsed once."""
    raw = d.get(key)
    if raw.__class__ is str:
        hit = cache.get(raw)
        if hit is not None:
            return hit
    value = m.decimal(d, key, required=False)
    if value is None:
        return None
    if not valid(value):
        raise m.ParseError(m.BAD_FIELD, f"{key} {rule}")
    if raw.__class__ is str:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[raw] = value
    return value


def levels(d: dict[str, Any], key: str) -> tuple[Level, ...]:
    """Book levels ``[{price, size}]`` in wire order (``null`` or absent = empty)."""
    raw = d.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise m.ParseError(m.BAD_FIELD, f"{key} must be an array")
    out: list[Level] = []
    for lvl in raw:
        if not isinstance(lvl, dict):
            raise m.ParseError(m.BAD_FIELD, f"{key} level must be an object")
        price = price_or_none(lvl, "price")
        raw_size = lvl.get("size")
        size = _SIZES.get(raw_size) if raw_size.__class__ is str else None
        if size is None:
            size = m.decimal(lvl, "size")
            if size is not None and size >= _ZERO and raw_size.__class__ is str and len(_SIZES) < _CACHE_MAX:
                _SIZES[raw_size] = size
        if price is None or size is None or size < _ZERO:
            raise m.ParseError(m.BAD_FIELD, f"{key} level needs a price and a size >= 0")
        out.append((price, size))
    return tuple(out)


def tick(d: dict[str, Any], *keys: str) -> Decimal | None:
    """A tick size in (0, 1) or None."""
    value = m.decimal(d, *keys, required=False)
    if value is not None and not _ZERO < value < _ONE:
        raise m.ParseError(m.BAD_FIELD, f"{keys[0]} must be in (0, 1)")
    return value


def parse_book(d: dict[str, Any]) -> BookMsg:
    """A ``book`` event or a REST ``/book`` body."""
    neg = d.get("neg_risk")
    return BookMsg(
        asset_id=asset(d, "asset_id"), market=m.text(d, "market").lower(),
        bids=levels(d, "bids"), asks=levels(d, "asks"), tick_size=tick(d, "tick_size"),
        last_trade_price=price_or_none(d, "last_trade_price"), venue_ms=m.millis(d, "timestamp"),
        min_order_size=m.decimal(d, "min_order_size", required=False),
        neg_risk=neg if isinstance(neg, bool) else None)


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
    """v2 ``price_changes`` whose every value is a string parsed before (or absent where allowed), else None.

    The feed's hot path: plain lookups, no checks beyond what a cache hit already proves (only valid
    strings are cached). Anything else returns None and the caller takes the checked path, which gives
    the same values or the same error."""
    prices, sizes = _PRICES.get, _SIZES.get
    out = []
    try:
        for c in raw:
            get = c.get
            price = prices(get("price"))
            if price is None:
                return None
            raw_size = get("size")
            size = None if raw_size is None else sizes(raw_size)
            raw_bid = get("best_bid")
            best_bid = None if raw_bid is None else prices(raw_bid)
            raw_ask = get("best_ask")
            best_ask = None if raw_ask is None else prices(raw_ask)
            side = get("side")
            asset_id = get("asset_id")
            if ((size is None and raw_size is not None) or (best_bid is None and raw_bid is not None)
                    or (best_ask is None and raw_ask is not None) or (side != "BUY" and side != "SELL")
                    or asset_id.__class__ is not str or not 0 < len(asset_id) <= 100):
                return None
            out.append(_new_tuple(LevelChange, (asset_id, side, price, size, best_bid, best_ask)))
    except (AttributeError, TypeError):  # not an object, an unhashable value: the checked path says which
        return None
    return tuple(out)


def parse_price_change(d: dict[str, Any]) -> PriceChangeMsg:
    """A ``price_change`` in the current (v2) or either legacy schema."""
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


def parse_event(d: dict[str, Any]) -> ClobMsg:
    """One market-channel event, dispatched on ``event_type``; unknown types are ignored, not errors."""
    kind = d.get("event_type")
    if kind == "book":
        return parse_book(d)
    if kind == "price_change":
        return parse_price_change(d)
    if kind == "last_trade_price":
        price = price_or_none(d, "price")
        if price is None:
            raise m.ParseError(m.MISSING_FIELD, "price")
        return LastTradeMsg(asset(d, "asset_id"), m.text(d, "market").lower(), price,
                            m.decimal(d, "size", required=False), m.side(d, "side", required=False),
                            m.millis(d, "timestamp"))
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


def parse_market(d: dict[str, Any], now_ms: int) -> list[MarketInfo]:
    """CLOB ``GET /markets/{condition_id}``: one MarketInfo per token."""
    tokens = d.get("tokens")
    if not isinstance(tokens, list):
        raise m.ParseError(m.BAD_FIELD, "tokens must be an array")
    tick_size = tick(d, "minimum_tick_size")
    min_size = m.decimal(d, "minimum_order_size", required=False)
    cid = m.condition_id(d, "condition_id")
    out = []
    for tok in tokens:
        if not isinstance(tok, dict):
            raise m.ParseError(m.BAD_FIELD, "token must be an object")
        out.append(MarketInfo(
            asset_id=m.token_id(tok, "token_id"), condition_id=cid,
            tick_size=tick_size if tick_size is not None else Decimal("0.01"),
            min_order_size=min_size if min_size is not None else _ZERO,
            neg_risk=d.get("neg_risk") is True, closed=d.get("closed") is True,
            accepting_orders=d.get("accepting_orders") is not False,
            market_slug=m.text(d, "market_slug"), updated_ms=now_ms,
            extra={"outcome": m.text(tok, "outcome"), "winner": "1" if tok.get("winner") is True else "0"}))
    return out
