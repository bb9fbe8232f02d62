"""A fake Insiders execution API (``docs/insiders-api.md``) on loopback, with fault injection.

The venue behind it (orders, balances, positions, matching against a book source) is
:class:`sim.venue.FakeVenue`. ``Idempotency-Key`` replays return the original order, never a second one.

Every POST is recorded with its arrival time (when the kernel received it, :mod:`sim.rxstamp`)
in :attr:`InsidersFake.posts`, including replays and faulted ones, so tests and benchmarks can count POSTs per
client order id independently of the fake's own idempotency.

Faults (:class:`sim.venue.Faults`): 5xx bursts for the next N requests (or POSTs), timeouts after the order
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
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from common.decimals import fmt, parse_decimal
from sim.httpserve import HttpServer, Request, Response, json_response
from sim.redemptions import RedeemRecord, RedeemRefused
from sim.venue import BookSource, FakeVenue, Faults, Rejected, StaticBooks

log = logging.getLogger(__name__)

Route = Callable[[Request, str], "Response | Awaitable[Response]"]


@dataclass
class PostRecord:
    """One POST /v1/orders as received."""

    arrival_ns: int
    idempotency_key: str
    client_order_id: str = ""
    status: int = 0
    outcome: str = ""  # created | replayed | fault | rejected | timeout | lost | unauthorized | invalid
    body: dict[str, Any] | None = None


class InsidersFake(FakeVenue):
    """The fake API server in front of a :class:`FakeVenue`. ``await start()`` returns its base URL."""

    def __init__(self, books: BookSource, *, token: str = "insiders-test-token", host: str = "127.0.0.1",
                 port: int = 0, settle_s: float = 0.05, default_balance: Decimal = Decimal(1_000_000),
                 tick_sizes: dict[str, Decimal] | None = None, min_sizes: dict[str, Decimal] | None = None,
                 default_tick: Decimal = Decimal("0.01"), enforce_positions: bool = False) -> None:
        super().__init__(books, settle_s=settle_s, default_balance=default_balance, tick_sizes=tick_sizes,
                         min_sizes=min_sizes, default_tick=default_tick, enforce_positions=enforce_positions)
        self.token = token
        self.host = host
        self.port = port
        self.posts: list[PostRecord] = []
        self.queries = 0
        self.redeem_queries = 0  # GET /v1/redeem/{redeemId}
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
            ("GET", "/v1/redeem/", ""): self._get_redeem,
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
            return _json(self.view(existing).to_json())
        f = self.faults
        code = f.reject_tokens.get(str(body.get("tokenId"))) or (f.reject_queue.popleft() if f.reject_queue else "")
        if code:
            record.status, record.outcome = 400, "rejected"
            return _json({"error": code, "message": "injected rejection"}, 400)
        try:
            order = self.validate(body)
        except Rejected as r:
            record.status, record.outcome = r.status, "rejected"
            return _json({"error": r.code, "message": r.message}, r.status)
        if f.lose_posts > 0:
            f.lose_posts -= 1
            record.status, record.outcome = 0, "lost"
            return _later(f.timeout_delay_s, _json({"error": "GATEWAY_TIMEOUT", "message": "lost"}, 504))
        try:
            self.match(order)
        except Rejected as r:
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
        return _json(self.view(o).to_json())

    def _get_order(self, request: Request, order_id: str) -> Response:
        fault = self._query_fault()
        if fault is not None:
            return fault
        o = self.orders.get(order_id)
        if o is None:
            return _json({"error": "ORDER_NOT_FOUND", "message": order_id}, 404)
        return _json(self.view(o).to_json())

    def _delete_order(self, request: Request, order_id: str) -> Response:
        o = self.orders.get(order_id)
        if o is None:
            return _json({"error": "ORDER_NOT_FOUND", "message": order_id}, 404)
        if o.status == "live":
            o.status = "cancelled"
        return _json(self.view(o).to_json())

    def _balance(self, request: Request, wallet: str) -> Response:
        return _json({"walletId": wallet, "usd": fmt(self.balance(wallet)),
                      "asOf": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _positions(self, request: Request, wallet: str) -> Response:
        if self.faults.fail_positions > 0:
            self.faults.fail_positions -= 1
            return _json({"error": "SERVICE_UNAVAILABLE", "message": "injected fault"}, self.faults.fail_status)
        rows = self.holdings.wallet_positions(wallet)
        if self.faults.garbage_positions > 0:
            self.faults.garbage_positions -= 1
            rows.append({"tokenId": "not-a-token", "size": "lots"})
        return _json({"positions": rows, "asOf": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _redeem(self, request: Request, _param: str) -> Response | Awaitable[Response]:
        key = request.headers.get("idempotency-key", "")
        try:
            body = orjson.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
        except ValueError as exc:
            self.holdings.records.append(RedeemRecord(key, "", "", 400, "invalid", request.arrival_ns))
            return _json({"error": "INVALID_BODY", "message": str(exc)}, 400)
        record = RedeemRecord(key, str(body.get("walletId") or ""), str(body.get("conditionId") or "").lower(),
                              arrival_ns=request.arrival_ns)
        self.holdings.records.append(record)
        if not key:
            record.status, record.outcome = 400, "invalid"
            return _json({"error": "IDEMPOTENCY_KEY_REQUIRED", "message": "Idempotency-Key header missing"}, 400)
        f = self.faults
        if f.fail_redeems > 0:
            f.fail_redeems -= 1
            record.status, record.outcome = f.fail_status, "fault"
            return _json({"error": "SERVICE_UNAVAILABLE", "message": "injected fault"}, f.fail_status)
        replay = key in self.holdings.by_key
        if f.reject_redeems and not replay:
            code = f.reject_redeems.popleft()
            record.status, record.outcome = 400, "rejected"
            return _json({"error": code, "message": "injected rejection"}, 400)
        try:
            answer = self.holdings.redeem(key, body)
        except RedeemRefused as r:
            record.status, record.outcome = r.status, "rejected"
            return _json({"error": r.code, "message": r.message}, r.status)
        record.status, record.outcome = 200, "replayed" if replay else "created"
        if f.redeem_status_words and not replay:
            answer = {**answer, "status": f.redeem_status_words.popleft()}
        if f.timeout_redeems > 0 and not replay:
            f.timeout_redeems -= 1
            record.outcome = "timeout"
            return _later(f.timeout_delay_s, _json(answer))
        return _json(answer)

    def _get_redeem(self, request: Request, redeem_id: str) -> Response:
        self.redeem_queries += 1
        r = self.holdings.redemptions.get(redeem_id)
        if r is None:
            return _json({"error": "REDEMPTION_NOT_FOUND", "message": redeem_id}, 404)
        return _json(r.view(self.settle_s))

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
                     "not_found_queries", "fail_settlements", "fail_redeems", "timeout_redeems", "fail_positions",
                     "garbage_positions"):
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
