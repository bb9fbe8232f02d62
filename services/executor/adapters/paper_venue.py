"""The paper venue: fills simulated by walking the current book in Redis (deterministic, idempotent).

FOK fills all or nothing, FAK what is available within the limit (the rest is killed); fees are
taken in shares on BUYs. Only a fresh book is filled against (confirmed by the venue within
``max_book_age_s``, :meth:`common.marketstate.BookSnapshot.fresh`): a stale one is ``NO_BOOK``.
Results are kept in Redis (``tt:paper:order:{clientOrderId}``) so a replay of the same client order id
returns the first result, also across restarts.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson

from common.decimals import ZERO, fmt, parse_decimal
from common.marketstate import read_book_and_feed
from services.executor.domain import venue_orders as v
from services.executor.domain.book_math import Levels, notional_within, volume_within, walk_buy_usd, walk_sell_size
from services.executor.domain.pricing import BPS

PRICE_QUANTUM = Decimal("0.00000001")
RESULT_TTL_S = 14 * 24 * 3600


def paper_order_id(client_order_id: str) -> str:
    """The paper venue's order id of a client order id."""
    return f"paper_{client_order_id}"


def paper_fill(req: v.PlaceRequest, bids: Levels, asks: Levels, fee_bps: Decimal) -> v.VenueResult:
    """Fill ``req`` against a book (pure). Returns the final order, or a 4xx-style VenueError."""
    buying = req.side == "BUY"
    if req.order_type not in ("FOK", "FAK"):
        return v.VenueError("http", 400, "PAPER_ORDER_TYPE_UNSUPPORTED", f"{req.order_type} is not simulated")
    if buying:
        amount = req.amount_usd or ZERO
        if amount <= 0:
            return v.VenueError("http", 400, "INVALID_ORDER_MIN_SIZE", "amountUsd must be positive")
        if req.order_type == "FOK" and notional_within(asks, req.limit_price, True) < amount:
            return v.VenueError("http", 400, "FOK_ORDER_NOT_FILLED_ERROR", "not enough asks within the limit")
        walk = walk_buy_usd(asks, amount, req.limit_price)
    else:
        size = req.size or ZERO
        if size <= 0:
            return v.VenueError("http", 400, "INVALID_ORDER_MIN_SIZE", "size must be positive")
        if req.order_type == "FOK" and volume_within(bids, req.limit_price, False) < size:
            return v.VenueError("http", 400, "FOK_ORDER_NOT_FILLED_ERROR", "not enough bids within the limit")
        walk = walk_sell_size(bids, size, req.limit_price)
    oid = paper_order_id(req.client_order_id)
    if walk.size <= 0:
        return v.VenueOrder(oid, req.client_order_id, v.CANCELLED)
    fee = walk.size * fee_bps / BPS if buying else ZERO
    avg = (walk.cost / walk.size).quantize(PRICE_QUANTUM)
    return v.VenueOrder(oid, req.client_order_id, v.CONFIRMED, walk.size, avg,
                        making_amount=walk.cost if buying else walk.size,
                        taking_amount=walk.size - fee if buying else walk.cost, fee_shares=fee)


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


class PaperVenue:
    """Venue adapter that fills against ``tt:book:{asset}`` (``common.marketstate``)."""

    name = "paper"

    def __init__(self, redis: Any, *, fee_bps: Decimal = ZERO, max_book_age_s: float = 20.0) -> None:
        self.redis = redis
        self.fee_bps = fee_bps
        self.max_book_age_ms = int(max_book_age_s * 1000)

    async def place(self, request: v.PlaceRequest, *, traceparent: str = "") -> v.VenueResult:
        """Fill now against the stored book; a replayed client order id returns the first result."""
        existing = await self.redis.get(_key(request.client_order_id))
        if existing:
            return decode_order(existing)
        book, beat = await read_book_and_feed(self.redis, request.token_id)
        if book is None:
            return v.VenueError("http", 400, "NO_BOOK", f"no book for {request.token_id}")
        if not book.fresh(time.time_ns() // 1_000_000, self.max_book_age_ms, beat):
            return v.VenueError("http", 400, "NO_BOOK", f"the book of {request.token_id} is stale or was never "
                                                       "snapshotted: nothing to fill against")
        result = paper_fill(request, book.bids, book.asks, self.fee_bps)
        if isinstance(result, v.VenueError):
            return result
        if not await self.redis.set(_key(request.client_order_id), encode_order(result), nx=True,
                                    ex=RESULT_TTL_S):
            raw = await self.redis.get(_key(request.client_order_id))
            return decode_order(raw) if raw else result
        return result

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
