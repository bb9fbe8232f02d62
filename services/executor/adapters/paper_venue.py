"""The paper venue: fills simulated by walking the current book in Redis (idempotent).

FOK fills all or nothing, FAK what is available within the limit (the rest is killed); fees are taken in shares
on BUYs, in USD on SELLs. The market's rules (``tt:market:{asset}``, read with the book) are held as the live venue
holds them: a closed, resolved or not accepting market is ``MARKET_CLOSED``, a limit off its tick grid
``INVALID_ORDER_MIN_TICK_SIZE``; a market found closed stays so, in memory, while no entry is stored (the executor
drops only its rules on a ``MARKET_CLOSED``: the entry still says closed). Only a fresh book is filled against
(confirmed by the venue within ``max_book_age_s``, :meth:`common.marketstate.BookSnapshot.fresh`): a stale one is
``NO_BOOK``. What paper orders took of each level is left out of the book the next paper order walks, whatever size
the book shows the level at since (the venue's book never shows paper takes), until the book drops the level or
``replenish_s`` has passed (:mod:`services.executor.domain.paper_book`, in memory).
Results are kept in Redis (``tt:paper:order:{clientOrderId}``) so a replay of the same client order id
returns the first result, also across restarts. A SELL is answered as the live venue answers it on the wallet's
balance (:mod:`services.executor.domain.paper_selling`): more shares than the wallet's PAPER position less its paper
SELLs in flight (filled here, not booked yet) is refused whole, ``INVALID_ORDER_NOT_ENOUGH_BALANCE``. That costs a SELL
one indexed read of PostgreSQL (:mod:`.paper_holdings`), and a Redis read of the results kept of the SELLs under way
this process has not filled (an earlier process's); a BUY reads neither.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal, DecimalException
from typing import Any, Protocol

import orjson

from common.decimals import ZERO, fmt, parse_decimal
from common.marketstate import BookSnapshot, MarketInfo, read_book_and_feed, read_market
from services.executor.domain import venue_orders as v
from services.executor.domain.book_math import Levels
from services.executor.domain.paper_book import ClosedMarkets, PaperBook, rules_answer, simulate
from services.executor.domain.paper_selling import Key, PaperHolding, PaperSelling, balance_answer

RESULT_TTL_S = 14 * 24 * 3600
REPLENISH_S = 10.0  # a level paper orders took is whole again this long after each take


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def paper_fill(req: v.PlaceRequest, bids: Levels, asks: Levels, fee_bps: Decimal) -> v.VenueResult:
    """Fill ``req`` against a book (pure). Returns the final order, or a 4xx-style VenueError."""
    return simulate(req, bids, asks, fee_bps)[0]


async def _read_market(redis: Any, asset_id: str) -> MarketInfo | None:
    """The market's rules as stored, or None (unknown, or a hash that does not parse: nothing to hold the order to)."""
    try:
        return await read_market(redis, asset_id)
    except (KeyError, ValueError, DecimalException):
        return None


def _tick(book: BookSnapshot | None, market: MarketInfo | None) -> Decimal | None:
    """The grid the venue holds a limit to: the book's tick when the venue named it (ingest writes a
    ``tick_size_change`` into the book as it comes), else the market's, else none known."""
    if book is not None and book.tick_known:
        return book.tick_size
    return market.tick_size if market is not None else None


def _closed(market: MarketInfo | None) -> bool | None:
    """Whether the venue takes no order of the market (resolved, closed or not accepting orders); None: not known."""
    return None if market is None else market.closed or not market.accepting_orders


def encode_order(o: v.VenueOrder) -> bytes:
    """Stored form of a paper result."""
    return orjson.dumps({"orderId": o.order_id, "clientOrderId": o.client_order_id, "status": o.status,
                         "filledSize": fmt(o.filled_size), "avgPrice": fmt(o.avg_price),
                         "makingAmount": fmt(o.making_amount), "takingAmount": fmt(o.taking_amount),
                         "feeShares": fmt(o.fee_shares)})


def decode_order(raw: bytes | str) -> v.VenueOrder:
    """Parse the stored form."""
    d: Any = orjson.loads(raw)
    return v.VenueOrder(d["orderId"], d["clientOrderId"], d["status"], parse_decimal(d["filledSize"]),
                        parse_decimal(d["avgPrice"]), parse_decimal(d["makingAmount"]),
                        parse_decimal(d["takingAmount"]), parse_decimal(d.get("feeShares", "0")))


def _key(client_order_id: str) -> str:
    return f"tt:paper:order:{client_order_id}"


class Holdings(Protocol):
    """Where the paper venue reads a wallet's paper holding (:class:`.paper_holdings.PaperHoldings`)."""

    async def read(self, wallet_id: str, asset_id: str, sending: Callable[[], None]) -> PaperHolding:
        """The holding; ``sending`` is called right before the read leaves."""


class PaperVenue:
    """Venue adapter that fills against ``tt:book:{asset}`` (``common.marketstate``)."""

    name = "paper"

    def __init__(self, redis: Any, *, holdings: Holdings, fee_bps: Decimal = ZERO, max_book_age_s: float = 20.0,
                 replenish_s: float = REPLENISH_S, clock: Callable[[], int] = _now_ms) -> None:
        self.redis = redis
        self.holdings = holdings
        self.selling = PaperSelling()
        self.fee_bps = fee_bps
        self.max_book_age_ms = int(max_book_age_s * 1000)
        self.taken = PaperBook(int(replenish_s * 1000))
        self.closed = ClosedMarkets()
        self.clock = clock
        self._placing: dict[str, asyncio.Event] = {}  # client order ids being placed

    async def place(self, request: v.PlaceRequest, *, traceparent: str = "") -> v.VenueResult:
        """Fill now against the stored book less what paper orders took; a replayed client order id returns the
        first result (a replay made meanwhile waits for it: it must not find the book less its own takes)."""
        coid = request.client_order_id
        while (busy := self._placing.get(coid)) is not None:
            await busy.wait()
        done = self._placing[coid] = asyncio.Event()
        try:
            return await self._place(request)
        finally:
            del self._placing[coid]
            done.set()

    async def _place(self, request: v.PlaceRequest) -> v.VenueResult:
        existing = await self.redis.get(_key(request.client_order_id))
        if existing:
            return decode_order(existing)
        buying = request.side == "BUY"
        key: Key = (request.wallet_id, request.token_id)
        holding, mark, stored = (None, 0, {}) if buying else await self._holding(key, request.client_order_id)
        (book, beat), market = await asyncio.gather(read_book_and_feed(self.redis, request.token_id),
                                                    _read_market(self.redis, request.token_id))
        closed = self.closed.closed(request.token_id, _closed(market))
        if (refused := rules_answer(request, _tick(book, market), closed)) is not None:
            return refused
        if book is None:
            return v.VenueError("http", 400, "NO_BOOK", f"no book for {request.token_id}")
        now = self.clock()
        if not book.fresh(now, self.max_book_age_ms, beat):
            return v.VenueError("http", 400, "NO_BOOK", f"the book of {request.token_id} is stale or was never "
                                                       "snapshotted: nothing to fill against")
        # from here to the take, no await: concurrent orders each see what the others took (and sold)
        if holding is not None:
            unbooked = self.selling.unbooked(key, holding, mark, stored, request.client_order_id)
            if (refused := balance_answer(holding.held, unbooked, request)) is not None:
                return refused
        side, levels = request.side, book.asks if buying else book.bids
        net = self.taken.net(request.token_id, side, levels, now)
        result, takes = simulate(request, book.bids if buying else net, net if buying else book.asks, self.fee_bps)
        if isinstance(result, v.VenueError):
            return result
        self.taken.take(request.token_id, side, takes, now)
        if not buying:
            self.selling.record(key, request.client_order_id, result.filled_size, now)
        try:
            kept = await self.redis.set(_key(request.client_order_id), encode_order(result), nx=True,
                                        ex=RESULT_TTL_S)
        except BaseException:
            self.taken.give_back(request.token_id, side, takes, now)
            self.selling.forget(key, request.client_order_id)  # if it was kept after all, Redis has it
            raise
        if not kept:  # another executor process kept a result of this order first (and its takes)
            self.taken.give_back(request.token_id, side, takes, now)
            self.selling.forget(key, request.client_order_id)
            raw = await self.redis.get(_key(request.client_order_id))
            return decode_order(raw) if raw else result
        return result

    async def _holding(self, key: Key, own: str) -> tuple[PaperHolding, int, dict[str, Decimal]]:
        """The wallet's holding of the token, the mark it was read after, and what the other SELLs under way filled:
        kept here now (a fill forgotten meanwhile still counts), else their results kept in Redis (an earlier
        process's)."""
        marks = [self.selling.mark()]
        holding = await self.holdings.read(*key, lambda: marks.append(self.selling.mark()))
        known = self.selling.filled(key, holding.selling)
        missing = [c for c in holding.selling if c not in known and c != own]
        stored: dict[str, Decimal] = {}
        if missing:
            for coid, raw in zip(missing, await self.redis.mget([_key(c) for c in missing]), strict=True):
                if raw:
                    stored[coid] = decode_order(raw).filled_size
        return holding, marks[-1], {**stored, **known}

    async def query_by_client_id(self, client_order_id: str) -> v.VenueResult:
        """The stored result, or 404."""
        raw = await self.redis.get(_key(client_order_id))
        if not raw:
            return v.VenueError("http", 404, "ORDER_NOT_FOUND", client_order_id)
        return decode_order(raw)

    async def query(self, venue_order_id: str) -> v.VenueResult:
        """The stored result by paper order id."""
        return await self.query_by_client_id(venue_order_id.removeprefix("paper_"))

    async def cancel(self, venue_order_id: str) -> v.VenueResult:
        """Paper orders never rest: cancelling returns the final result."""
        return await self.query(venue_order_id)

    async def close(self) -> None:
        """Nothing to release."""
