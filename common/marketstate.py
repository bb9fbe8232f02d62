"""Market state in Redis shared by ingest (writer), router, executor and guard (readers).

Keys:
- ``tt:book:{asset}`` STRING, JSON of :class:`BookSnapshot` (levels best-first: bids descending, asks ascending).
- ``tt:bookfeed`` STRING, JSON of :class:`FeedBeat`: the book feed's current session and when the venue last
  confirmed it (ingest writes it about every second while its market socket is up).
- ``tt:market:{asset}`` HASH of :class:`MarketInfo` fields (tick size, minimum order size, neg-risk, closed...).
  Its field ``resolved_winner`` (the winning token id, written by ingest when the market resolved) keeps the
  market closed whatever a later write of the other fields says (a CLOB REST answer lagging the resolution).
  ``outcome_index`` (from a CLOB REST market: the token's place in its ``tokens``, the outcome index) says
  which outcome the token is (:func:`outcome_order`). A venue refusal drops only the cached rules
  (:func:`drop_market_rules`): a hash without a tick size or without a minimum order size has the router read
  them again before it routes (unless the market is closed). ``taker_fee_rate`` / ``taker_fee_exponent``: the
  market's taker fee (:mod:`common.takerfee`), written when an answer names it; absent or not understood: none known.
- ``tt:watch:positions`` / ``tt:watch:triggers`` SETs of asset ids the book feed must follow
  (maintained by executor / guard); a change is announced on channel ``tt:watch:changed``, as the
  difference (:func:`watch_diff`, published in the same MULTI as the SADD / SREM, so the messages come
  in the order the set changed) or as the set's name (read it again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from common import takerfee
from common.decimals import fmt, fmt_memo
from common.takerfee import TakerFee

WATCH_POSITIONS = "tt:watch:positions"
WATCH_TRIGGERS = "tt:watch:triggers"
WATCH_CHANNEL = "tt:watch:changed"

WATCH_SETS = (WATCH_POSITIONS, WATCH_TRIGGERS)
BOOK_FEED_KEY = "tt:bookfeed"

Level = tuple[Decimal, Decimal]
RESOLVED_WINNER = "resolved_winner"  # tt:market:{asset} field: set once the market resolved (sticky closed)
OUTCOME_INDEX = "outcome_index"  # tt:market:{asset} field: the token's outcome index (its place in REST tokens)
# tt:market:{asset} fields a venue refusal says may be stale (the router writes them again from CLOB REST)
RULE_FIELDS = ("tick_size", "min_order_size")
_ZERO = Decimal(0)
CLOSED_TICK = Decimal("0.01")  # the tick of a closed market whose rules are not known (they no longer matter)


@dataclass(frozen=True, slots=True)
class WatchChange:
    """One ``tt:watch:changed`` message: assets added to / removed from the watch set ``key``, or ``reread``:
    read that set again."""

    key: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    reread: bool = False


def watch_diff(key: str, added: Any = (), removed: Any = (), *, reset: bool = False) -> bytes:
    """The ``tt:watch:changed`` message for a change of ``key`` (``reset``: the set was rewritten)."""
    if reset:
        return orjson.dumps({"set": key, "reset": True})
    return orjson.dumps({"set": key, "added": sorted(added), "removed": sorted(removed)})


async def change_watch_set(redis: Any, key: str, added: Collection[str], removed: Collection[str]) -> None:
    """Add and remove assets of the watch set ``key`` and announce the difference, in one MULTI (so the
    announcements come in the order the set changed)."""
    pipe = redis.pipeline(transaction=True)
    if added:
        pipe.sadd(key, *sorted(added))
    if removed:
        pipe.srem(key, *sorted(removed))
    pipe.publish(WATCH_CHANNEL, watch_diff(key, added, removed))
    await pipe.execute()


def parse_watch_change(data: str | bytes) -> WatchChange | None:
    """A ``tt:watch:changed`` message as a change; None when it is not one this version understands (the
    reader then reads every set again). A bare set name (or ``positions``, as older executors sent) asks
    for that set to be read again."""
    text = data.decode() if isinstance(data, bytes) else data
    if text in WATCH_SETS:
        return WatchChange(text, reread=True)
    if text == "positions":
        return WatchChange(WATCH_POSITIONS, reread=True)
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or msg.get("set") not in WATCH_SETS:
        return None
    if msg.get("reset") is True:
        return WatchChange(msg["set"], reread=True)
    added, removed = msg.get("added", []), msg.get("removed", [])
    if not (isinstance(added, list) and isinstance(removed, list)
            and all(isinstance(a, str) for a in (*added, *removed))):
        return None
    return WatchChange(msg["set"], tuple(added), tuple(removed))


def book_key(asset_id: str) -> str:
    """Key of one asset's book snapshot."""
    return f"tt:book:{asset_id}"


def market_key(asset_id: str) -> str:
    """Key of one asset's market info."""
    return f"tt:market:{asset_id}"


@dataclass(frozen=True, slots=True)
class FeedBeat:
    """The book feed's heartbeat (``tt:bookfeed``): its socket session and when the venue last sent anything
    on it (a frame or a PONG), Unix ms. Every change received until ``alive_ms`` is in the stored books of
    that session (ingest writes the beat after them)."""

    session: str
    alive_ms: int

    def to_json(self) -> bytes:
        """Serialized form stored in Redis."""
        return orjson.dumps({"session": self.session, "aliveMs": self.alive_ms})

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> FeedBeat | None:
        """Parse the stored form; None when absent or not understood (no session is then alive)."""
        if not raw:
            return None
        try:
            d: Any = orjson.loads(raw)
            session, alive = d["session"], d["aliveMs"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(session, str) or not session or not isinstance(alive, int) or isinstance(alive, bool):
            return None
        return cls(session, alive)


@dataclass(frozen=True)
class BookSnapshot:
    """An asset's order book, levels best-first, with when it was last updated and how far it can be trusted.

    ``snapshot``: the levels come from a venue snapshot (and the changes since); False: no levels are known
    (never snapshotted, or out of sync): the empty sides then say nothing about liquidity. ``session``: the
    book feed session that keeps the book up to date ("" for a one-off REST snapshot, confirmed only at
    ``updated_ms``). See :meth:`confirmed_ms`. ``tick_known``: ``tick_size`` is the venue's (a book frame, a
    ``tick_size_change`` or a REST book named it); False: a default put in while the venue had named none.
    """

    asset_id: str
    condition_id: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    tick_size: Decimal
    venue_time_ms: int
    updated_ms: int
    last_trade_price: Decimal | None = None
    snapshot: bool = True
    session: str = ""
    tick_known: bool = False

    @property
    def best_bid(self) -> Decimal | None:
        """Highest bid holding shares (a level of size 0 holds nothing), or None when there is none."""
        bids = self.bids
        if bids and bids[0][1] > 0:  # as always from ingest, which drops empty levels
            return bids[0][0]
        return next((price for price, size in bids if size > 0), None)

    @property
    def best_ask(self) -> Decimal | None:
        """Lowest ask holding shares, or None when there is none."""
        asks = self.asks
        if asks and asks[0][1] > 0:
            return asks[0][0]
        return next((price for price, size in asks if size > 0), None)

    @property
    def mark(self) -> Decimal | None:
        """The price open shares are valued at (:func:`mark_price`)."""
        return mark_price(self.best_bid, self.best_ask, self.last_trade_price)

    def confirmed_ms(self, beat: FeedBeat | None) -> int | None:
        """When the venue last confirmed these levels (Unix ms), or None when they cannot be trusted at all:
        never snapshotted, or kept by a feed session that is over (``beat`` names another one, or none).

        A book of the live session is confirmed as of the session's last beat (a quiet book is not rewritten,
        yet every change until the beat is in it); a REST snapshot (no session) as of when it was taken."""
        if not self.snapshot:
            return None
        if not self.session:
            return self.updated_ms
        if beat is None or beat.session != self.session:
            return None
        return max(self.updated_ms, beat.alive_ms)

    def age_ms(self, now_ms: int, beat: FeedBeat | None) -> int | None:
        """How long ago the venue last confirmed the levels; None when never (see :meth:`confirmed_ms`)."""
        confirmed = self.confirmed_ms(beat)
        return None if confirmed is None else max(0, now_ms - confirmed)

    def fresh(self, now_ms: int, max_age_ms: int, beat: FeedBeat | None = None) -> bool:
        """True when the levels were confirmed by the venue within ``max_age_ms``: only then do they say
        what can be bought or sold now (an empty side of a fresh book is no liquidity)."""
        age = self.age_ms(now_ms, beat)
        return age is not None and age <= max_age_ms

    def is_stale(self, now_ms: int, max_age_ms: int, beat: FeedBeat | None = None) -> bool:
        """``not fresh(...)``."""
        return not self.fresh(now_ms, max_age_ms, beat)

    def to_json(self) -> bytes:
        """Serialized form stored in Redis."""
        return orjson.dumps({
            "assetId": self.asset_id, "conditionId": self.condition_id,
            "bids": [[fmt_memo(p), fmt_memo(s)] for p, s in self.bids],
            "asks": [[fmt_memo(p), fmt_memo(s)] for p, s in self.asks],
            "tickSize": fmt_memo(self.tick_size), "venueTimeMs": self.venue_time_ms,
            "updatedMs": self.updated_ms,
            "lastTradePrice": fmt_memo(self.last_trade_price) if self.last_trade_price is not None else "",
            "snapshot": self.snapshot, "session": self.session, "tickKnown": self.tick_known,
        })

    @classmethod
    def from_json(cls, raw: bytes | str) -> BookSnapshot:
        """Parse the stored form (a book stored before ``snapshot`` / ``session`` existed is a REST-like
        snapshot confirmed at ``updatedMs``; one stored before ``tickKnown`` existed does not vouch for its tick)."""
        d: Any = orjson.loads(raw)
        return cls(
            asset_id=d["assetId"], condition_id=d.get("conditionId", ""),
            bids=tuple((Decimal(p), Decimal(s)) for p, s in d["bids"]),
            asks=tuple((Decimal(p), Decimal(s)) for p, s in d["asks"]),
            tick_size=Decimal(d["tickSize"]), venue_time_ms=int(d["venueTimeMs"]),
            updated_ms=int(d["updatedMs"]),
            last_trade_price=Decimal(d["lastTradePrice"]) if d.get("lastTradePrice") else None,
            snapshot=d.get("snapshot", True) is not False, session=str(d.get("session") or ""),
            tick_known=d.get("tickKnown") is True,
        )


def mark_price(bid: Decimal | None, ask: Decimal | None, last: Decimal | None) -> Decimal | None:
    """The price open shares are valued at (guard's PnL, control's positions): the mid when both sides of
    the book exist, else the best bid, else the last trade price; None when the book has none of them."""
    if bid is not None and ask is not None:
        return (bid + ask) / 2
    if bid is not None:
        return bid
    return last


def mark_from_json(raw: bytes | str) -> tuple[Decimal | None, int]:
    """(:func:`mark_price`, ``updatedMs``) of a stored book, reading only its best levels (a page of
    positions reads hundreds of books: converting every level to Decimal would cost far more)."""
    d: Any = orjson.loads(raw)
    last = d.get("lastTradePrice")
    return (mark_price(_best(d.get("bids")), _best(d.get("asks")), Decimal(last) if last else None),
            int(d.get("updatedMs") or 0))


def _best(levels: Any) -> Decimal | None:
    """The price of the first stored level holding shares (a level of size 0 holds nothing)."""
    for price, size in levels or ():
        if Decimal(size) > 0:
            return Decimal(price)
    return None


@dataclass(frozen=True)
class MarketInfo:
    """Trading rules of one asset's market (from CLOB market info, refreshed on tick_size_change). ``tick_size`` 0:
    the rules are not known (dropped, :func:`drop_market_rules`; the router reads them again)."""

    asset_id: str
    condition_id: str
    tick_size: Decimal
    min_order_size: Decimal
    neg_risk: bool = False
    closed: bool = False
    accepting_orders: bool = True
    market_slug: str = ""
    event_slug: str = ""
    updated_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    taker_fee: TakerFee | None = None  # None: no fee known (a book alone, or an answer naming none usable)

    def to_hash(self) -> dict[str, str]:
        """Fields stored in the Redis hash (the taker fee's only when known: a book alone does not undo it)."""
        return {
            "asset_id": self.asset_id, "condition_id": self.condition_id,
            "tick_size": fmt(self.tick_size), "min_order_size": fmt(self.min_order_size),
            "neg_risk": "1" if self.neg_risk else "0", "closed": "1" if self.closed else "0",
            "accepting_orders": "1" if self.accepting_orders else "0",
            "market_slug": self.market_slug, "event_slug": self.event_slug,
            "updated_ms": str(self.updated_ms), **self.extra,
            **(self.taker_fee.to_fields() if self.taker_fee is not None else {}),
        }

    @property
    def resolved_winner(self) -> str:
        """The winning token id once the market resolved ("" before)."""
        return self.extra.get(RESOLVED_WINNER, "")

    @property
    def outcome_index(self) -> int | None:
        """The token's outcome index as CLOB REST lists the market's tokens; None when not known (an entry from
        a book alone, or written before the index was kept)."""
        raw = self.extra.get(OUTCOME_INDEX, "")
        return int(raw) if raw.isdigit() and len(raw) <= 4 else None

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> MarketInfo:
        """Parse the stored hash (string values); a resolved market is closed and accepts no orders. A hash whose
        rules were dropped has tick size and minimum order size 0, and so has one that lacks either of them (a
        ``tick_size_change`` written after they were dropped brings the tick back alone): the rules are read whole
        from CLOB REST. A closed market's tick is then :data:`CLOSED_TICK`: its rules no longer matter, and the
        router reads none again before it routes (it would route with a CLOB REST answer lagging the close)."""
        known = {"asset_id", "condition_id", "tick_size", "min_order_size", "neg_risk", "closed",
                 "accepting_orders", "market_slug", "event_slug", "updated_ms", takerfee.RATE_FIELD,
                 takerfee.EXPONENT_FIELD}
        resolved = bool(h.get(RESOLVED_WINNER))
        tick_raw, min_raw = h.get("tick_size"), h.get("min_order_size")
        tick, minimum = (Decimal(tick_raw), Decimal(min_raw)) if tick_raw and min_raw else (_ZERO, _ZERO)
        closed = resolved or h.get("closed") == "1"
        return cls(
            asset_id=h["asset_id"], condition_id=h.get("condition_id", ""),
            tick_size=CLOSED_TICK if closed and tick <= 0 else tick,
            min_order_size=minimum, neg_risk=h.get("neg_risk") == "1", closed=closed,
            accepting_orders=not resolved and h.get("accepting_orders", "1") == "1",
            market_slug=h.get("market_slug", ""), event_slug=h.get("event_slug", ""),
            updated_ms=int(h.get("updated_ms") or 0),
            extra={k: v for k, v in h.items() if k not in known}, taker_fee=takerfee.from_fields(h),
        )


def outcome_order(condition_id: str, asset_ids: Sequence[str],
                  infos: Mapping[str, MarketInfo | None]) -> tuple[str, ...] | None:
    """``asset_ids`` in outcome-index order, by their cached market infos (``infos``: token → info); None when
    that order is not known for sure: a token without an info naming market ``condition_id`` or without an
    outcome index, or indices that are not exactly 0..n-1 (the tokens are not the whole market, or two share
    one)."""
    by_index: dict[int, str] = {}
    for asset_id in asset_ids:
        info = infos.get(asset_id)
        index = info.outcome_index if info is not None and info.condition_id == condition_id else None
        if index is None or index in by_index:
            return None
        by_index[index] = asset_id
    if sorted(by_index) != list(range(len(asset_ids))):
        return None
    return tuple(by_index[i] for i in range(len(asset_ids)))


async def read_book(redis: Any, asset_id: str) -> BookSnapshot | None:
    """The stored book of an asset, or None."""
    raw = await redis.get(book_key(asset_id))
    return BookSnapshot.from_json(raw) if raw else None


async def read_book_and_feed(redis: Any, asset_id: str) -> tuple[BookSnapshot | None, FeedBeat | None]:
    """The stored book of an asset and the book feed's beat (both read at once: they share a round trip on a
    pipelined client), to judge the book with :meth:`BookSnapshot.fresh`."""
    raw, beat = await asyncio.gather(redis.get(book_key(asset_id)), redis.get(BOOK_FEED_KEY))
    return (BookSnapshot.from_json(raw) if raw else None), FeedBeat.from_json(beat)


async def write_book(redis: Any, book: BookSnapshot) -> None:
    """Store an asset's book."""
    await redis.set(book_key(book.asset_id), book.to_json())


async def read_market(redis: Any, asset_id: str) -> MarketInfo | None:
    """The stored market info of an asset, or None."""
    raw = await redis.hgetall(market_key(asset_id))
    if not raw:
        return None
    h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in raw.items()}
    return MarketInfo.from_hash(h)


async def write_market(redis: Any, info: MarketInfo) -> None:
    """Store an asset's market info."""
    await redis.hset(market_key(info.asset_id), mapping=info.to_hash())


async def drop_market_rules(redis: Any, asset_id: str) -> None:
    """Forget an asset's cached rules (:data:`RULE_FIELDS`: the venue refused an order by them), so that the router
    reads them again before it routes the asset (:meth:`MarketInfo.from_hash`: tick size 0); the rest stays:
    ``resolved_winner`` (a resolved market stays closed), ``outcome_index``, the market's identity, closed or not (a
    closed market's rules are not read again before routing)."""
    await redis.hdel(market_key(asset_id), *RULE_FIELDS)
