"""The CLOB REST API: ``GET /book`` and ``GET /markets/{condition_id}``, and their bodies parsed into values.

One client and one set of parsers for ingest (book resyncs, market info, resolution checks) and the router
(market info and the first book of an asset before routing). A ``/book`` body has the shape of the
market channel's ``book`` event, so ingest's feed parses those with :func:`parse_book` too. Parsers are
strict (:class:`~common.fields.ParseError` names the field); :func:`market_infos` turns a market and/or a
book into the :class:`~common.marketstate.MarketInfo` of each token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common import fields as f
from common.marketstate import OUTCOME_INDEX, Level, MarketInfo
from common.memo import Memo
from common.restget import Page, RestGetter
from common.takerfee import TakerFee, parse_taker_fee

DEFAULT_TICK = Decimal("0.01")  # ingest's tick for a market that names none (the venue's usual one)
_ZERO = Decimal(0)
_ONE = Decimal(1)

# Prices sit on the tick grid and sizes repeat, so the same strings recur: each valid one is parsed once (only
# strings are cached: 1, 1.0 and True are equal dict keys). The feed's hot path reads their ``hot`` dicts directly.
PRICE_CACHE: Memo[str, Decimal] = Memo(4096)
SIZE_CACHE: Memo[str, Decimal] = Memo(4096)


class ClobRest:
    """CLOB ``GET /book`` and ``GET /markets/{condition_id}``."""

    def __init__(self, getter: RestGetter, base_url: str) -> None:
        self.getter = getter
        self.base_url = base_url.rstrip("/")

    async def book(self, asset_id: str) -> Page:
        """The REST order book of one token."""
        return await self.getter.get(f"{self.base_url}/book", {"token_id": asset_id})

    async def market(self, condition_id: str) -> Page:
        """Market info (tick size, minimum order size, tokens...)."""
        return await self.getter.get(f"{self.base_url}/markets/{condition_id}", {})


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


@dataclass(frozen=True, slots=True)
class MarketToken:
    """One outcome token of a market."""

    token_id: str
    outcome: str
    winner: bool


@dataclass(frozen=True, slots=True)
class ClobMarket:
    """A ``GET /markets/{condition_id}`` body; ``tick_size``, ``min_order_size`` and ``neg_risk`` None when absent."""

    condition_id: str
    tokens: tuple[MarketToken, ...]
    tick_size: Decimal | None
    min_order_size: Decimal | None
    neg_risk: bool | None
    closed: bool
    accepting_orders: bool
    market_slug: str
    taker_fee: TakerFee | None = None  # None: the answer names no usable fee (:func:`common.takerfee.parse_taker_fee`)
    fee_problem: str = ""  # what in the answer's fee fields was unusable ("" when nothing): the caller logs it


def asset(d: dict[str, Any], *keys: str) -> str:
    """A CLOB asset id: any non-empty string (subscriptions decide which ones matter)."""
    value = f.text(d, *keys, required=True, max_len=100)
    if not value:
        raise f.ParseError(f.MISSING_FIELD, keys[0])
    return value


def price_or_none(d: dict[str, Any], key: str) -> Decimal | None:
    """A price in [0, 1] or None when absent."""
    return _remembered(d, key, PRICE_CACHE, lambda v: _ZERO <= v <= _ONE, "must be in [0, 1]")


def size_or_none(d: dict[str, Any], key: str) -> Decimal | None:
    """A size >= 0 or None when absent."""
    return _remembered(d, key, SIZE_CACHE, lambda v: v >= _ZERO, "must be >= 0")


def _remembered(d: dict[str, Any], key: str, cache: Memo[str, Decimal], valid: Callable[[Decimal], bool],
                rule: str) -> Decimal | None:
    """``d[key]`` as a Decimal passing ``valid`` (BAD_FIELD naming ``rule`` otherwise), None when absent;
    valid string values are parsed once."""
    raw = d.get(key)
    if raw.__class__ is str:
        hit = cache.get(raw)
        if hit is not None:
            return hit
    value = f.decimal(d, key, required=False)
    if value is None:
        return None
    if not valid(value):
        raise f.ParseError(f.BAD_FIELD, f"{key} {rule}")
    if raw.__class__ is str:
        cache.put(raw, value)
    return value


def levels(d: dict[str, Any], key: str) -> tuple[Level, ...]:
    """Book levels ``[{price, size}]`` in wire order (``null`` or absent = empty)."""
    raw = d.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise f.ParseError(f.BAD_FIELD, f"{key} must be an array")
    out: list[Level] = []
    for lvl in raw:
        if not isinstance(lvl, dict):
            raise f.ParseError(f.BAD_FIELD, f"{key} level must be an object")
        price = price_or_none(lvl, "price")
        raw_size = lvl.get("size")
        size = SIZE_CACHE.get(raw_size) if raw_size.__class__ is str else None
        if size is None:
            size = f.decimal(lvl, "size")
            if size is not None and size >= _ZERO and raw_size.__class__ is str:
                SIZE_CACHE.put(raw_size, size)
        if price is None or size is None or size < _ZERO:
            raise f.ParseError(f.BAD_FIELD, f"{key} level needs a price and a size >= 0")
        out.append((price, size))
    return tuple(out)


def tick(d: dict[str, Any], *keys: str) -> Decimal | None:
    """A tick size in (0, 1) or None."""
    value = f.decimal(d, *keys, required=False)
    if value is not None and not _ZERO < value < _ONE:
        raise f.ParseError(f.BAD_FIELD, f"{keys[0]} must be in (0, 1)")
    return value


def parse_book(d: dict[str, Any]) -> BookMsg:
    """A REST ``/book`` body or a market-channel ``book`` event."""
    neg = d.get("neg_risk")
    return BookMsg(
        asset_id=asset(d, "asset_id"), market=f.text(d, "market").lower(),
        bids=levels(d, "bids"), asks=levels(d, "asks"), tick_size=tick(d, "tick_size"),
        last_trade_price=price_or_none(d, "last_trade_price"), venue_ms=f.millis(d, "timestamp"),
        min_order_size=f.decimal(d, "min_order_size", required=False),
        neg_risk=neg if isinstance(neg, bool) else None)


def parse_market(d: dict[str, Any]) -> ClobMarket:
    """A CLOB ``GET /markets/{condition_id}`` body."""
    tokens = d.get("tokens")
    if not isinstance(tokens, list):
        raise f.ParseError(f.BAD_FIELD, "tokens must be an array")
    parsed = []
    for tok in tokens:
        if not isinstance(tok, dict):
            raise f.ParseError(f.BAD_FIELD, "token must be an object")
        parsed.append(MarketToken(f.token_id(tok, "token_id"), f.text(tok, "outcome"), tok.get("winner") is True))
    neg = d.get("neg_risk")
    fee, fee_problem = parse_taker_fee(d)  # an unusable fee is no fee known, never an unusable answer
    return ClobMarket(
        condition_id=f.condition_id(d, "condition_id"), tokens=tuple(parsed), tick_size=tick(d, "minimum_tick_size"),
        min_order_size=f.decimal(d, "minimum_order_size", required=False),
        neg_risk=neg if isinstance(neg, bool) else None, closed=d.get("closed") is True,
        accepting_orders=d.get("accepting_orders") is not False, market_slug=f.text(d, "market_slug"),
        taker_fee=fee, fee_problem=fee_problem)


def market_infos(now_ms: int, *, market: ClobMarket | None = None, book: BookMsg | None = None,
                 asset_id: str = "", default_tick: Decimal | None = None) -> list[MarketInfo]:
    """MarketInfo of ``asset_id`` and of every token of ``market``. The book's tick, minimum size and neg-risk
    flag win (they are current), the market's next, then ``default_tick``; ``asset_id`` is left out when the
    market lists tokens without it and no book confirms it. A token of ``market`` also gets its outcome label,
    whether it won, and its outcome index (its place in the market's ``tokens``, which CLOB REST lists in
    outcome-index order), and the market's taker fee (a book alone names none). Raises ParseError when no tick size
    is known."""
    tick_size = (book.tick_size if book else None) or (market.tick_size if market else None) or default_tick
    if tick_size is None:
        raise f.ParseError(f.MISSING_FIELD, "tick_size")
    min_size = book.min_order_size if book and book.min_order_size is not None else None
    if min_size is None and market is not None:
        min_size = market.min_order_size
    neg_risk = market.neg_risk if market and market.neg_risk is not None else None
    if neg_risk is None:
        neg_risk = bool(book and book.neg_risk)
    condition = (market.condition_id if market else "") or (book.market if book else "")
    tokens = {t.token_id: t for t in market.tokens} if market else {}
    index: dict[str, int] = {}  # token → outcome index (its first place in the market's tokens)
    for i, t in enumerate(market.tokens if market else ()):
        index.setdefault(t.token_id, i)
    known = [asset_id] if asset_id and (book is not None or not tokens or asset_id in tokens) else []
    out = []
    for token in dict.fromkeys([*known, *tokens]):
        info = tokens.get(token)
        out.append(MarketInfo(
            asset_id=token, condition_id=condition, tick_size=tick_size,
            min_order_size=min_size if min_size is not None else _ZERO, neg_risk=neg_risk,
            closed=market.closed if market else False,
            accepting_orders=market.accepting_orders if market else True,
            market_slug=market.market_slug if market else "", updated_ms=now_ms,
            extra={"outcome": info.outcome, "winner": "1" if info.winner else "0",
                   OUTCOME_INDEX: str(index[token])} if info else {},
            taker_fee=market.taker_fee if market else None))
    return out
