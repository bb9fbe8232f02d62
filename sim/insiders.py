"""A fake Insiders execution API (``../shared/INSIDERS_API.md``) on loopback, with fault injection.

Orders fill against a :class:`BookSource` (``sim.books.SimBooks`` or the tiny :class:`StaticBooks`):
FOK all or nothing, FAK what is available within the limit, GTC the marketable part with the rest
resting ``live``. BUYs spend ``amountUsd``, SELLs sell ``size`` shares. A matched order becomes
``mined`` then ``confirmed`` (or ``failed``) after ``settle_s``. ``Idempotency-Key`` replays return
the original order, never a second one.

Every POST is recorded with its arrival time (``time.time_ns()`` when its first bytes reached the
process) in :attr:`InsidersFake.posts`, including replays and faulted ones, so tests and benchmarks can count
POSTs per client order id independently of the fake's own idempotency.

Faults (:class:`Faults`): 5xx bursts for the next N requests (or POSTs), timeouts after the order
was taken (the response is held past the client's timeout; the order stays recorded, or is dropped
to simulate a venue that never heard of it), not-found for the next N status queries, partial
fills, on-chain failures, and rejections with any error code (per token or from a scripted queue).

It serves HTTP/1.1 through :mod:`sim.httpserve` (not aiohttp): it shares the machine with the system it
measures, so its CPU per POST is kept small.

Run standalone: ``python -m sim.insiders --port 0 --token T`` prints its URL; ``/_sim/*`` routes
(same bearer token) read the POST log, script faults and set books.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Protocol

import orjson

from common.decimals import ZERO, fmt, fmt_memo, parse_decimal
from sim.httpserve import HttpServer, Request, Response, json_response

log = logging.getLogger(__name__)

Level = tuple[Decimal, Decimal]
Route = Callable[[Request, str], "Response | Awaitable[Response]"]
SIZE_QUANTUM = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.00000001")
ERROR_CODES = ("INVALID_ORDER_MIN_SIZE", "INVALID_ORDER_MIN_TICK_SIZE", "INVALID_ORDER_NOT_ENOUGH_BALANCE",
               "FOK_ORDER_NOT_FILLED_ERROR", "MARKET_CLOSED", "INVALID_ORDER_DUPLICATED")


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
class PostRecord:
    """One POST /v1/orders as received."""

    arrival_ns: int
    idempotency_key: str
    client_order_id: str = ""
    status: int = 0
    outcome: str = ""  # created | replayed | fault | rejected | timeout | lost | unauthorized | invalid
    body: dict[str, Any] | None = None



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


class InsidersFake:
    """The fake API server. ``await start()`` returns its base URL."""

    def __init__(self, books: BookSource, *, token: str = "insiders-test-token", host: str = "127.0.0.1",
                 port: int = 0, settle_s: float = 0.05, default_balance: Decimal = Decimal(1_000_000),
                 tick_sizes: dict[str, Decimal] | None = None, min_sizes: dict[str, Decimal] | None = None,
                 default_tick: Decimal = Decimal("0.01"), enforce_positions: bool = False) -> None:
        self.books = books
        self.token = token
        self.host = host
        self.port = port
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
        self.posts: list[PostRecord] = []
        self.orders: dict[str, FakeOrder] = {}  # by order id
        self.by_client_id: dict[str, str] = {}
        self.queries = 0
        self._ids = itertools.count(1)
        self._server: HttpServer | None = None
        self._auth = f"Bearer {token}"
        self.url = ""
        # exact paths, then /v1/orders/{order_id}, /v1/wallets/{wallet_id}/..., /_sim/books/{asset_id}
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/v1/orders"): self._get_by_client_id,
            ("POST", "/v1/redeem"): self._redeem, ("GET", "/_sim/posts"): self._admin_posts,
            ("POST", "/_sim/faults"): self._admin_faults, ("POST", "/_sim/reset"): self._admin_reset}
        self._param_routes: dict[tuple[str, str, str], Route] = {
            ("GET", "/v1/orders/", ""): self._get_order, ("DELETE", "/v1/orders/", ""): self._delete_order,
            ("GET", "/v1/wallets/", "/balance"): self._balance, ("GET", "/v1/wallets/", "/positions"): self._positions,
            ("PUT", "/_sim/books/", ""): self._admin_book}

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on ``host:port`` (0 = a free port); returns the base URL."""
        self._server = HttpServer(self._handle, host=self.host, port=self.port, backlog=4096)
        self.port = await self._server.start()
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # -- inspection helpers ---------------------------------------------------------------------

    def posts_for(self, client_order_id: str) -> list[PostRecord]:
        """Every POST that named this client order id (header or body)."""
        return [p for p in self.posts if client_order_id in (p.client_order_id, p.idempotency_key)]

    def post_counts(self) -> dict[str, int]:
        """POSTs received per client order id."""
        counts: dict[str, int] = {}
        for p in self.posts:
            key = p.client_order_id or p.idempotency_key
            counts[key] = counts.get(key, 0) + 1
        return counts

    def taken_counts(self) -> dict[str, int]:
        """POSTs per client order id that the venue processed (created or replayed, not faulted)."""
        counts: dict[str, int] = {}
        for p in self.posts:
            if p.outcome in ("created", "timeout", "replayed"):
                key = p.client_order_id or p.idempotency_key
                counts[key] = counts.get(key, 0) + 1
        return counts

    def order(self, client_order_id: str) -> FakeOrder | None:
        """The order held for a client order id."""
        oid = self.by_client_id.get(client_order_id)
        return self.orders.get(oid) if oid else None

    def balance(self, wallet_id: str) -> Decimal:
        """A wallet's USD balance."""
        return self.balances.setdefault(wallet_id, self.default_balance)

    # -- HTTP -----------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response | Awaitable[Response]:
        """Every request: record POSTs, check the token, inject request faults, route."""
        path, method = request.path, request.method
        record: PostRecord | None = None
        if method == "POST" and path == "/v1/orders":
            record = PostRecord(request.arrival_ns, request.headers.get("idempotency-key", ""))
            self.posts.append(record)
        if request.headers.get("authorization", "") != self._auth:
            if record is not None:
                record.status, record.outcome = 401, "unauthorized"
            return _json({"error": "UNAUTHORIZED", "message": "missing or wrong bearer token"}, 401)
        if not path.startswith("/_sim/"):
            f = self.faults
            if f.fail_requests > 0 or (record is not None and f.fail_posts > 0):
                if f.fail_requests > 0:
                    f.fail_requests -= 1
                else:
                    f.fail_posts -= 1
                if record is not None:
                    record.status, record.outcome = f.fail_status, "fault"
                return _json({"error": "SERVICE_UNAVAILABLE", "message": "injected fault"}, f.fail_status)
        if record is not None:
            return self._post_order(request, record)
        route, param = self._route(method, path)
        if route is None or param is None:
            return _json({"error": "NOT_FOUND" if param is None else "METHOD_NOT_ALLOWED", "message": path},
                         404 if param is None else 405)
        return route(request, param)

    def _route(self, method: str, path: str) -> tuple[Route | None, str | None]:
        """The handler and its path parameter; (None, None) for an unknown path, (None, "") for a known
        path with another method."""
        exact = self._routes.get((method, path))
        if exact is not None:
            return exact, ""
        known = any(p == path for _m, p in self._routes)
        for (m, prefix, suffix), handler in self._param_routes.items():
            if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
                param = path[len(prefix):len(path) - len(suffix)]
                if "/" in param:
                    continue
                if m == method:
                    return handler, param
                known = True
        return None, "" if known else None

    def _post_order(self, request: Request, record: PostRecord) -> Response | Awaitable[Response]:
        key = record.idempotency_key
        try:
            body = orjson.loads(request.body)
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
        except ValueError as exc:
            record.status, record.outcome = 400, "invalid"
            return _json({"error": "INVALID_BODY", "message": str(exc)}, 400)
        record.body = body
        record.client_order_id = str(body.get("clientOrderId") or "")
        if not key:
            record.status, record.outcome = 400, "invalid"
            return _json({"error": "IDEMPOTENCY_KEY_REQUIRED", "message": "Idempotency-Key header missing"}, 400)
        if key != record.client_order_id:
            record.status, record.outcome = 400, "invalid"
            return _json({"error": "INVALID_IDEMPOTENCY_KEY", "message": "Idempotency-Key must equal clientOrderId"},
                         400)
        existing = self.order(key)
        if existing is not None:
            record.status, record.outcome = 200, "replayed"
            return _json(self._view(existing).to_json())
        f = self.faults
        code = f.reject_tokens.get(str(body.get("tokenId"))) or (f.reject_queue.popleft() if f.reject_queue else "")
        if code:
            record.status, record.outcome = 400, "rejected"
            return _json({"error": code, "message": "injected rejection"}, 400)
        try:
            order = self._validate(body)
        except _Reject as r:
            record.status, record.outcome = r.status, "rejected"
            return _json({"error": r.code, "message": r.message}, r.status)
        if f.lose_posts > 0:
            f.lose_posts -= 1
            record.status, record.outcome = 0, "lost"
            return _later(f.timeout_delay_s, _json({"error": "GATEWAY_TIMEOUT", "message": "lost"}, 504))
        try:
            self._match(order)
        except _Reject as r:
            record.status, record.outcome = r.status, "rejected"
            return _json({"error": r.code, "message": r.message}, r.status)
        self.orders[order.order_id] = order
        self.by_client_id[order.client_order_id] = order.order_id
        if f.timeout_posts > 0:
            f.timeout_posts -= 1
            record.status, record.outcome = 200, "timeout"
            return _later(f.timeout_delay_s, _json(order.to_json()))
        record.status, record.outcome = 200, "created"
        if f.post_delay_s:
            return _later(f.post_delay_s, _json(order.to_json()))
        return _json(order.to_json())

    def _validate(self, body: dict[str, Any]) -> FakeOrder:
        side = str(body.get("side") or "").upper()
        order_type = str(body.get("orderType") or "").upper()
        token = str(body.get("tokenId") or "")
        if side not in ("BUY", "SELL") or order_type not in ("FOK", "FAK", "GTC") or not token:
            raise _Reject("INVALID_ORDER", "side, orderType and tokenId are required")
        try:
            limit = _parse(body.get("limitPrice"))
            amount = _parse(body["amountUsd"]) if body.get("amountUsd") is not None else None
            size = _parse(body["size"]) if body.get("size") is not None else None
        except (ValueError, KeyError) as exc:
            raise _Reject("INVALID_ORDER", f"bad decimal: {exc}") from None
        if side == "BUY" and order_type != "GTC" and (amount is None or amount <= 0):
            raise _Reject("INVALID_ORDER", "BUY FOK/FAK needs amountUsd")
        if (side == "SELL" or order_type == "GTC") and (size is None or size <= 0):
            raise _Reject("INVALID_ORDER", "SELL and GTC need size")
        if token in self.closed_markets:
            raise _Reject("MARKET_CLOSED", "market is closed")
        tick = self.tick_sizes.get(token, self.default_tick)
        if limit < tick or limit > 1 - tick or (limit / tick) != (limit / tick).to_integral_value():
            raise _Reject("INVALID_ORDER_MIN_TICK_SIZE", f"limitPrice {fmt(limit)} is not on the {fmt(tick)} grid")
        shares = size if size is not None else (amount or ZERO) / limit
        if shares < self.min_sizes.get(token, ZERO):
            raise _Reject("INVALID_ORDER_MIN_SIZE", f"size {fmt(shares)} below minimum")
        wallet = str(body.get("walletId") or "")
        if side == "BUY" and (amount or (size or ZERO) * limit) > self.balance(wallet):
            raise _Reject("INVALID_ORDER_NOT_ENOUGH_BALANCE", "not enough balance")
        if side == "SELL" and self.enforce_positions:
            held = self.positions.get(wallet, {}).get(token, [ZERO, ZERO])[0]
            if held < (size or ZERO):
                raise _Reject("INVALID_ORDER_NOT_ENOUGH_BALANCE", "not enough shares")
        oid = "io_" + hashlib.sha256(f"{body.get('clientOrderId')}{next(self._ids)}".encode()).hexdigest()[:24]
        return FakeOrder(oid, str(body.get("clientOrderId")), wallet, token, side, order_type, amount, size, limit,
                         "live")

    def _match(self, o: FakeOrder) -> None:
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
                raise _Reject("FOK_ORDER_NOT_FILLED_ERROR", "order could not be fully filled")
        ratio = self.faults.partial_ratio
        if ratio is not None and fills:
            fills = _scale(fills, ratio)
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

    def _view(self, o: FakeOrder) -> FakeOrder:
        """Advance a matched order through mined → confirmed/failed as time passes."""
        if o.status == "unmatched":
            o.status = "cancelled"
        if o.status in ("matched", "mined"):
            elapsed = time.monotonic() - o.matched_at
            if elapsed >= self.settle_s:
                o.status = o.final
            elif elapsed >= self.settle_s / 2:
                o.status = "mined"
        return o

    def _query_fault(self) -> Response | None:
        self.queries += 1
        if self.faults.not_found_queries > 0:
            self.faults.not_found_queries -= 1
            return _json({"error": "ORDER_NOT_FOUND", "message": "injected not-found"}, 404)
        return None

    def _get_by_client_id(self, request: Request, _param: str) -> Response:
        coid = request.query.get("clientOrderId", "")
        if not coid:
            return _json({"error": "INVALID_QUERY", "message": "clientOrderId is required"}, 400)
        fault = self._query_fault()
        if fault is not None:
            return fault
        o = self.order(coid)
        if o is None:
            return _json({"error": "ORDER_NOT_FOUND", "message": coid}, 404)
        return _json(self._view(o).to_json())

    def _get_order(self, request: Request, order_id: str) -> Response:
        fault = self._query_fault()
        if fault is not None:
            return fault
        o = self.orders.get(order_id)
        if o is None:
            return _json({"error": "ORDER_NOT_FOUND", "message": order_id}, 404)
        return _json(self._view(o).to_json())

    def _delete_order(self, request: Request, order_id: str) -> Response:
        o = self.orders.get(order_id)
        if o is None:
            return _json({"error": "ORDER_NOT_FOUND", "message": order_id}, 404)
        if o.status == "live":
            o.status = "cancelled"
        return _json(self._view(o).to_json())

    def _balance(self, request: Request, wallet: str) -> Response:
        return _json({"walletId": wallet, "usd": fmt(self.balance(wallet)),
                      "asOf": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _positions(self, request: Request, wallet: str) -> Response:
        out = [{"tokenId": token, "conditionId": "", "size": fmt(size),
                "avgPrice": fmt((cost / size).quantize(PRICE_QUANTUM)) if size else "0"}
               for token, (size, cost) in self.positions.get(wallet, {}).items() if size > 0]
        return _json({"positions": out})

    def _redeem(self, request: Request, _param: str) -> Response:
        body = orjson.loads(request.body or b"{}")
        if not isinstance(body, dict) or not body.get("walletId") or not body.get("conditionId"):
            return _json({"error": "INVALID_BODY", "message": "walletId and conditionId are required"}, 400)
        tx = "0x" + hashlib.sha256(f"{body['walletId']}{body['conditionId']}".encode()).hexdigest()
        return _json({"status": "submitted", "txHash": tx})

    # -- admin ----------------------------------------------------------------------------------

    def _admin_posts(self, request: Request, _param: str) -> Response:
        since = int(request.query.get("since", "0"))
        rows = [{"clientOrderId": p.client_order_id, "idempotencyKey": p.idempotency_key, "arrivalNs": p.arrival_ns,
                 "status": p.status, "outcome": p.outcome} for p in self.posts[since:]]
        return _json({"posts": rows, "next": since + len(rows)})

    def _admin_faults(self, request: Request, _param: str) -> Response:
        body = orjson.loads(request.body or b"{}")
        f = self.faults
        for name in ("fail_requests", "fail_posts", "fail_status", "timeout_posts", "lose_posts",
                     "not_found_queries", "fail_settlements"):
            if name in body:
                setattr(f, name, int(body[name]))
        for name in ("timeout_delay_s", "post_delay_s"):
            if name in body:
                setattr(f, name, float(body[name]))
        if "partial_ratio" in body:
            f.partial_ratio = None if body["partial_ratio"] is None else parse_decimal(body["partial_ratio"])
        if "reject_tokens" in body:
            f.reject_tokens = {str(k): str(v) for k, v in dict(body["reject_tokens"]).items()}
        for code in body.get("reject_queue", []):
            f.reject_queue.append(str(code))
        return _json({"ok": True})

    def _admin_book(self, request: Request, asset_id: str) -> Response:
        body = orjson.loads(request.body or b"{}")
        setter = getattr(self.books, "set", None) or getattr(self.books, "set_book", None)
        if setter is None:
            return _json({"error": "UNSUPPORTED", "message": "book source cannot be set"}, 400)
        setter(asset_id, bids=body.get("bids", []), asks=body.get("asks", []))
        return _json({"ok": True})

    def _admin_reset(self, request: Request, _param: str) -> Response:
        self.posts.clear()
        self.faults = Faults()
        return _json({"ok": True})


class _Reject(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(code)
        self.code = code
        self.message = message
        self.status = status


_PARSED: dict[str, Decimal] = {}  # a fan-out's POSTs repeat their amounts and limit: parse each string once


def _parse(raw: Any) -> Decimal:
    """:func:`parse_decimal`, remembered for strings (bounded)."""
    if not isinstance(raw, str):
        return parse_decimal(raw)
    value = _PARSED.get(raw)
    if value is None:
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        value = _PARSED[raw] = parse_decimal(raw)
    return value


def _scale(fills: list[Level], ratio: Decimal) -> list[Level]:
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


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return json_response(payload, status)


async def _later(delay_s: float, response: Response) -> Response:
    """``response`` after ``delay_s`` (held answers: timeouts, slow venue)."""
    await asyncio.sleep(delay_s)
    return response


async def _serve(port: int, token: str, settle_s: float) -> None:
    fake = InsidersFake(StaticBooks(), token=token, port=port, settle_s=settle_s)
    url = await fake.start()
    print(url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the fake standalone (books and faults through ``/_sim``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="insiders-test-token")
    parser.add_argument("--settle-s", type=float, default=0.05)
    args = parser.parse_args(argv)
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args.port, args.token, args.settle_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
