"""The fake venue behind the Insiders API fake: its orders, balances, positions, and matching.

Orders fill against a :class:`BookSource` (``sim.books.SimBooks`` or the tiny :class:`StaticBooks`):
FOK all or nothing, FAK what is available within the limit, GTC the marketable part with the rest
resting ``live``. BUYs spend ``amountUsd``, SELLs sell ``size`` shares. A matched order becomes
``mined`` then ``confirmed`` (or ``failed``) after ``settle_s``. No HTTP here: :mod:`sim.insiders`
serves it.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Protocol

from common.decimals import ZERO, fmt, fmt_memo, parse_decimal
from sim.redemptions import Holdings

Level = tuple[Decimal, Decimal]

SIZE_QUANTUM = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.00000001")


class BookSource(Protocol):
    """Where the fake finds liquidity: best-first levels, and taking liquidity like a taker of ``side``."""

    def levels(self, asset_id: str) -> tuple[Sequence[Level], Sequence[Level]]:
        """(bids best-first, asks best-first)."""
        ...

    def consume(self, asset_id: str, side: str, size: Decimal) -> Any:
        """Take ``size`` shares as a ``side`` (BUY takes asks, SELL takes bids) taker."""
        ...


class StaticBooks:
    """A minimal BookSource: books set by hand, consumed by fills."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[list[Level], list[Level]]] = {}

    def set(self, asset_id: str, *, bids: Sequence[tuple[Any, Any]] = (), asks: Sequence[tuple[Any, Any]] = ()) -> None:
        """Replace a book (any order; sorted best-first here)."""
        b = sorted(((Decimal(str(p)), Decimal(str(s))) for p, s in bids), key=lambda lv: lv[0], reverse=True)
        a = sorted(((Decimal(str(p)), Decimal(str(s))) for p, s in asks), key=lambda lv: lv[0])
        self.books[asset_id] = (b, a)

    def levels(self, asset_id: str) -> tuple[Sequence[Level], Sequence[Level]]:
        """(bids best-first, asks best-first)."""
        bids, asks = self.books.get(asset_id, ([], []))
        return tuple(bids), tuple(asks)

    def consume(self, asset_id: str, side: str, size: Decimal) -> None:
        """Remove ``size`` shares from the side a ``side`` taker hits."""
        bids, asks = self.books.get(asset_id, ([], []))
        levels = asks if side == "BUY" else bids
        remaining = size
        while remaining > 0 and levels:
            price, level_size = levels[0]
            take = min(level_size, remaining)
            remaining -= take
            if take == level_size:
                levels.pop(0)
            else:
                levels[0] = (price, level_size - take)


@dataclass
class FakeOrder:
    """An order the fake holds."""

    order_id: str
    client_order_id: str
    wallet_id: str
    token_id: str
    side: str
    order_type: str
    amount_usd: Decimal | None
    size: Decimal | None
    limit_price: Decimal
    status: str
    filled_size: Decimal = ZERO
    cost: Decimal = ZERO
    tx_hashes: list[str] = field(default_factory=list)
    matched_at: float = 0.0
    final: str = "confirmed"  # what a matched order settles to: confirmed | failed

    @property
    def avg_price(self) -> Decimal:
        """Average fill price."""
        return (self.cost / self.filled_size).quantize(PRICE_QUANTUM) if self.filled_size else ZERO

    def to_json(self) -> dict[str, Any]:
        """The order as the API returns it."""
        buying = self.side == "BUY"
        return {"orderId": self.order_id, "clientOrderId": self.client_order_id, "status": self.status,
                "filledSize": fmt_memo(self.filled_size), "avgPrice": fmt_memo(self.avg_price),
                "makingAmount": fmt_memo(self.cost if buying else self.filled_size),
                "takingAmount": fmt_memo(self.filled_size if buying else self.cost), "txHashes": self.tx_hashes}


@dataclass
class Faults:
    """Scripted misbehaviour; every counter counts down as it fires."""

    fail_requests: int = 0  # next N requests of any kind answer ``fail_status``
    fail_posts: int = 0  # next N POSTs answer ``fail_status`` (nothing recorded)
    fail_status: int = 503
    timeout_posts: int = 0  # next N POSTs: order taken, answer held ``timeout_delay_s``
    lose_posts: int = 0  # next N POSTs: answer held ``timeout_delay_s`` and the order is NOT recorded
    timeout_delay_s: float = 10.0
    not_found_queries: int = 0  # next N status queries answer 404 even if the order exists
    partial_ratio: Decimal | None = None  # fill only this fraction of what the book would give
    fail_settlements: int = 0  # next N matched orders settle ``failed``
    reject_tokens: dict[str, str] = field(default_factory=dict)  # token id → error code for every POST
    reject_queue: deque[str] = field(default_factory=deque)  # error codes for the next POSTs, in order
    post_delay_s: float = 0.0  # every POST answer waits this long (after taking the order)
    fail_redeems: int = 0  # next N POST /v1/redeem answer ``fail_status`` (nothing taken)
    fail_positions: int = 0  # next N GET /v1/wallets/{id}/positions answer ``fail_status``
    garbage_positions: int = 0  # next N GET /v1/wallets/{id}/positions answer 200 with a malformed row
    timeout_redeems: int = 0  # next N POST /v1/redeem: redemption taken, answer held ``timeout_delay_s``
    reject_redeems: deque[str] = field(default_factory=deque)  # error codes for the next POST /v1/redeem
    # status words the next new POST /v1/redeem answers carry instead of the contract's (the redemption is taken)
    redeem_status_words: deque[str] = field(default_factory=deque)


class FakeVenue:
    """Orders, balances and positions of the fake venue, filled against ``books``."""

    def __init__(self, books: BookSource, *, settle_s: float = 0.05, default_balance: Decimal = Decimal(1_000_000),
                 tick_sizes: dict[str, Decimal] | None = None, min_sizes: dict[str, Decimal] | None = None,
                 default_tick: Decimal = Decimal("0.01"), enforce_positions: bool = False) -> None:
        self.books = books
        self.settle_s = settle_s
        self.default_balance = default_balance
        self.tick_sizes = tick_sizes or {}
        self.min_sizes = min_sizes or {}
        self.default_tick = default_tick
        self.enforce_positions = enforce_positions
        self.closed_markets: set[str] = set()
        self.balances: dict[str, Decimal] = {}
        self.positions: dict[str, dict[str, list[Decimal]]] = {}  # wallet → token → [size, cost]
        self.faults = Faults()
        self.holdings = Holdings(self.positions, self.balances, self.closed_markets, default_balance, settle_s)
        self.orders: dict[str, FakeOrder] = {}  # by order id
        self.by_client_id: dict[str, str] = {}
        self._ids = itertools.count(1)


    def order(self, client_order_id: str) -> FakeOrder | None:
        """The order held for a client order id."""
        oid = self.by_client_id.get(client_order_id)
        return self.orders.get(oid) if oid else None

    def balance(self, wallet_id: str) -> Decimal:
        """A wallet's USD balance."""
        return self.balances.setdefault(wallet_id, self.default_balance)

    def validate(self, body: dict[str, Any]) -> FakeOrder:
        """The order a POST body asks for, or :class:`Rejected` with the venue's error code."""
        side = str(body.get("side") or "").upper()
        order_type = str(body.get("orderType") or "").upper()
        token = str(body.get("tokenId") or "")
        if side not in ("BUY", "SELL") or order_type not in ("FOK", "FAK", "GTC") or not token:
            raise Rejected("INVALID_ORDER", "side, orderType and tokenId are required")
        try:
            limit = parse_amount(body.get("limitPrice"))
            amount = parse_amount(body["amountUsd"]) if body.get("amountUsd") is not None else None
            size = parse_amount(body["size"]) if body.get("size") is not None else None
        except (ValueError, KeyError) as exc:
            raise Rejected("INVALID_ORDER", f"bad decimal: {exc}") from None
        if side == "BUY" and order_type != "GTC" and (amount is None or amount <= 0):
            raise Rejected("INVALID_ORDER", "BUY FOK/FAK needs amountUsd")
        if (side == "SELL" or order_type == "GTC") and (size is None or size <= 0):
            raise Rejected("INVALID_ORDER", "SELL and GTC need size")
        if token in self.closed_markets:
            raise Rejected("MARKET_CLOSED", "market is closed")
        tick = self.tick_sizes.get(token, self.default_tick)
        if limit < tick or limit > 1 - tick or (limit / tick) != (limit / tick).to_integral_value():
            raise Rejected("INVALID_ORDER_MIN_TICK_SIZE", f"limitPrice {fmt(limit)} is not on the {fmt(tick)} grid")
        shares = size if size is not None else (amount or ZERO) / limit
        if shares < self.min_sizes.get(token, ZERO):
            raise Rejected("INVALID_ORDER_MIN_SIZE", f"size {fmt(shares)} below minimum")
        wallet = str(body.get("walletId") or "")
        if side == "BUY" and (amount or (size or ZERO) * limit) > self.balance(wallet):
            raise Rejected("INVALID_ORDER_NOT_ENOUGH_BALANCE", "not enough balance")
        if side == "SELL" and self.enforce_positions:
            held = self.positions.get(wallet, {}).get(token, [ZERO, ZERO])[0]
            if held < (size or ZERO):
                raise Rejected("INVALID_ORDER_NOT_ENOUGH_BALANCE", "not enough shares")
        oid = "io_" + hashlib.sha256(f"{body.get('clientOrderId')}{next(self._ids)}".encode()).hexdigest()[:24]
        return FakeOrder(oid, str(body.get("clientOrderId")), wallet, token, side, order_type, amount, size, limit,
                         "live")

    def match(self, o: FakeOrder) -> None:
        """Fill ``o`` against the book as its type allows (FOK all or nothing: :class:`Rejected`)."""
        bids, asks = self.books.levels(o.token_id)
        buying = o.side == "BUY"
        levels = asks if buying else bids
        budget = o.amount_usd if buying and o.order_type != "GTC" else None
        want = o.size if budget is None else None
        fills: list[Level] = []
        for price, level_size in levels:
            if (buying and price > o.limit_price) or (not buying and price < o.limit_price):
                break
            if budget is not None:
                take = min(level_size, (budget / price).quantize(SIZE_QUANTUM, rounding=ROUND_DOWN))
                if take <= 0:
                    break
                budget -= take * price
            else:
                assert want is not None
                take = min(level_size, want)
                want -= take
            fills.append((price, take))
            if (budget is not None and budget <= 0) or (want is not None and want <= 0):
                break
        if o.order_type == "FOK":
            within = [(p, s) for p, s in levels if (p <= o.limit_price if buying else p >= o.limit_price)]
            enough = (sum((p * s for p, s in within), ZERO) >= (o.amount_usd or ZERO) if budget is not None
                      else sum((s for _, s in within), ZERO) >= (o.size or ZERO))
            if not enough:
                raise Rejected("FOK_ORDER_NOT_FILLED_ERROR", "order could not be fully filled")
        ratio = self.faults.partial_ratio
        if ratio is not None and fills:
            fills = scale_fills(fills, ratio)
        size = sum((s for _, s in fills), ZERO)
        cost = sum((p * s for p, s in fills), ZERO)
        if size > 0:
            self.books.consume(o.token_id, o.side, size)
            self._settle_wallet(o, size, cost)
            o.filled_size, o.cost = size, cost
            o.tx_hashes = ["0x" + hashlib.sha256(o.order_id.encode()).hexdigest()]
        resting = o.order_type == "GTC" and (o.size or ZERO) > size
        if resting:
            o.status = "live"
        elif size > 0:
            o.status, o.matched_at = "matched", time.monotonic()
            if self.faults.fail_settlements > 0:
                self.faults.fail_settlements -= 1
                o.final = "failed"
        else:
            o.status = "unmatched"

    def _settle_wallet(self, o: FakeOrder, size: Decimal, cost: Decimal) -> None:
        pos = self.positions.setdefault(o.wallet_id, {}).setdefault(o.token_id, [ZERO, ZERO])
        if o.side == "BUY":
            self.balances[o.wallet_id] = self.balance(o.wallet_id) - cost
            pos[0] += size
            pos[1] += cost
        else:
            self.balances[o.wallet_id] = self.balance(o.wallet_id) + cost
            if pos[0] > 0:
                pos[1] -= pos[1] * min(size, pos[0]) / pos[0]
            pos[0] = max(ZERO, pos[0] - size)

    def drop(self, client_order_id: str) -> None:
        """Forget an order, as a venue that lost it would: every lookup and cancel of it is a 404 from now on."""
        o = self.order(client_order_id)
        if o is None:
            raise KeyError(client_order_id)
        del self.orders[o.order_id]
        del self.by_client_id[client_order_id]

    def fill_resting(self, client_order_id: str, size: Decimal, price: Decimal) -> None:
        """Match part of a resting (``live``) GTC order, as if a taker arrived."""
        o = self.order(client_order_id)
        if o is None or o.status != "live":
            raise KeyError(client_order_id)
        size = min(size, (o.size or ZERO) - o.filled_size)
        o.filled_size += size
        o.cost += size * price
        self._settle_wallet(o, size, size * price)
        if o.filled_size >= (o.size or ZERO):
            o.status, o.matched_at = "matched", time.monotonic()

    def view(self, o: FakeOrder) -> FakeOrder:
        """The order as a query sees it now (a matched one moves on to mined, then confirmed or failed)."""
        if o.status == "unmatched":
            o.status = "cancelled"
        if o.status in ("matched", "mined"):
            elapsed = time.monotonic() - o.matched_at
            if elapsed >= self.settle_s:
                o.status = o.final
            elif elapsed >= self.settle_s / 2:
                o.status = "mined"
        return o


class Rejected(Exception):
    """An order the venue refuses: its error code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = status


_PARSED: dict[str, Decimal] = {}  # a fan-out's POSTs repeat their amounts and limit: parse each string once


def parse_amount(raw: Any) -> Decimal:
    """:func:`parse_decimal`, remembered for strings (bounded)."""
    if not isinstance(raw, str):
        return parse_decimal(raw)
    value = _PARSED.get(raw)
    if value is None:
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        value = _PARSED[raw] = parse_decimal(raw)
    return value


def scale_fills(fills: list[Level], ratio: Decimal) -> list[Level]:
    """The first ``ratio`` of the shares of ``fills`` (best levels first): a partial fill."""
    total = sum((s for _, s in fills), ZERO)
    target = (total * ratio).quantize(SIZE_QUANTUM, rounding=ROUND_DOWN)
    out: list[Level] = []
    for price, size in fills:
        if target <= 0:
            break
        take = min(size, target)
        out.append((price, take))
        target -= take
    return out
