"""The Insiders API adapter (docs/insiders-api.md): the only module that knows its URLs, headers and JSON.

Transport: :mod:`common.http1`, a small keep-alive HTTP/1.1 client (for 1,000 concurrent POSTs
aiohttp needs ~3× its time and client CPU, httpx with an unlimited pool seconds; the numbers are
``python -m bench compare --only http``). Every POST carries ``Idempotency-Key: <clientOrderId>``, so
a retried attempt can never create a second order.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson

from common.config import Secret
from common.decimals import ZERO, fmt, fmt_memo, parse_decimal
from common.fields import ParseError, canonical_token_id, condition_id
from common.http1 import BadResponse, ConnectFailed, ConnectionDropped, Http1Client, ResponseTimeout
from services.executor.domain import venue_orders as v
from services.executor.ports import Answer


def request_body(req: v.PlaceRequest) -> bytes:
    """JSON body of ``POST /v1/orders`` (the orders of a fan-out repeat their amounts and limit: their
    strings are remembered)."""
    return orjson.dumps({
        "clientOrderId": req.client_order_id, "userId": req.user_id, "walletId": req.wallet_id,
        "proxy": req.proxy, "tokenId": req.token_id, "side": req.side, "orderType": req.order_type,
        "amountUsd": fmt_memo(req.amount_usd) if req.amount_usd is not None else None,
        "size": fmt_memo(req.size) if req.size is not None else None,
        "limitPrice": fmt_memo(req.limit_price), "negRisk": req.neg_risk,
    })


def _dec(d: dict[str, Any], key: str) -> Any:
    raw = d.get(key)
    return ZERO if raw in (None, "") else parse_decimal(raw)


_FINAL = frozenset({v.CONFIRMED, v.CANCELLED})


def parse_order(raw: bytes) -> v.VenueResult:
    """An order from a 2xx body, or a protocol error when it does not read as one."""
    try:
        d = orjson.loads(raw)
        if not isinstance(d, dict) or not d.get("status"):
            raise ValueError("no status")
        status = v.canonical_status(str(d["status"]))  # "canceled" is "cancelled": its filledSize is required too
        if status in _FINAL and d.get("filledSize") in (None, ""):
            # read as 0 it would end a filled order unfilled: an unlisted word instead, so the order is asked again,
            # counted, and alerted after the LOST window like any unlisted status (unlisted_statuses)
            status = f"{status}_without_filled_size"
        return v.VenueOrder(str(d.get("orderId") or ""), str(d.get("clientOrderId") or ""), status,
                            _dec(d, "filledSize"), _dec(d, "avgPrice"), _dec(d, "makingAmount"),
                            _dec(d, "takingAmount"), _dec(d, "feeShares"),
                            tuple(str(h) for h in d.get("txHashes") or ()))
    except (ValueError, TypeError, KeyError) as exc:
        return v.VenueError("protocol", 200, "", f"unreadable order: {exc!r}"[:300])


def parse_error(status: int, raw: bytes) -> v.VenueError:
    """A VenueError from a non-200 answer (``{"error": CODE, "message": …}`` when the body has it)."""
    code, message = "", ""
    try:
        d = orjson.loads(raw)
        if isinstance(d, dict):
            code, message = str(d.get("error") or ""), str(d.get("message") or "")
    except ValueError:
        message = raw[:200].decode("utf-8", "replace")
    return v.VenueError("http", status, code, message)


_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MISMATCH = "VENUE_ANSWER_MISMATCH"


def _about(result: v.VenueResult, client_order_id: str, order_id: str) -> v.VenueResult:
    """``result``, or a protocol error when it is an order other than the one asked about (an id the venue echoes
    differs): an answer read off a connection out of step must not be booked to this order."""
    if not isinstance(result, v.VenueOrder):
        return result
    if client_order_id and result.client_order_id and result.client_order_id != client_order_id:
        return v.VenueError("protocol", 200, MISMATCH, f"answer about order {result.client_order_id[:80]!r}")
    if order_id and result.order_id and result.order_id != order_id:
        return v.VenueError("protocol", 200, MISMATCH, f"answer about venue order {result.order_id[:80]!r}")
    return result


def redeem_body(wallet_id: str, condition_id: str, neg_risk: bool, amounts: Sequence[Decimal]) -> bytes:
    """JSON body of ``POST /v1/redeem`` (``amounts`` only for neg-risk markets: shares per outcome index)."""
    body: dict[str, Any] = {"walletId": wallet_id, "conditionId": condition_id, "negRisk": neg_risk}
    if neg_risk:
        body["amounts"] = [fmt(a) for a in amounts]
    return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class RedeemView:
    """A redemption as the venue reports it."""

    redeem_id: str
    status: str  # submitted | confirmed | failed
    tx_hash: str
    payout_usd: Decimal | None
    error: str


def parse_redemption(d: dict[str, Any]) -> RedeemView:
    """A redemption from a 200 body; ValueError when it does not read as one."""
    status = str(d.get("status") or "").lower()
    if not status:
        raise ValueError("no status")
    payout = d.get("payoutUsd")
    return RedeemView(str(d.get("redeemId") or ""), status, str(d.get("txHash") or ""),
                      None if payout in (None, "") else parse_decimal(payout), str(d.get("error") or ""))


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """One row of ``GET /v1/wallets/{walletId}/positions``."""

    token_id: str
    condition_id: str  # 0x + 64 hex, lower-cased; "" when absent or malformed (not trusted)
    outcome: str
    size: Decimal
    avg_price: Decimal
    redeemable: bool
    as_of: datetime | None = None  # when the venue counted this row (its own asOf); None: not given or unreadable


@dataclass(frozen=True, slots=True)
class VenuePositions:
    """A positions answer: its rows, when the venue took its count, and the fields it gave that are not trusted."""

    rows: list[VenuePosition]
    as_of: datetime | None  # the answer's asOf (the venue's clock); None: missing or unreadable
    untrusted: list[tuple[str, str]]  # (field, why): an asOf missing or unreadable, a malformed conditionId


_TOKEN = re.compile(r"^[0-9]{1,80}$")
EARLIEST_AS_OF = datetime(2000, 1, 1, tzinfo=UTC)  # an asOf before this is no count time (a zero, a default)


def parse_as_of(raw: Any) -> datetime | None:
    """An ``asOf`` as an aware UTC datetime: an ISO-8601 string with its offset (``Z`` or ``±hh:mm``); None when
    absent or ""; ValueError when it is anything else (no offset: whose clock it is cannot be told)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise ValueError("asOf must be an ISO-8601 string")
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"asOf {raw[:40]!r} is not an ISO-8601 time") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"asOf {raw[:40]!r} has no UTC offset")
    at = at.astimezone(UTC)
    if at < EARLIEST_AS_OF:
        raise ValueError(f"asOf {raw[:40]!r} is no count time")
    return at


def parse_positions(d: dict[str, Any]) -> VenuePositions:
    """Every row of a positions answer, and when the venue took its count; ValueError naming what is wrong when
    any row is malformed (then the whole answer is unusable: reconciling from part of it would close positions it
    merely left out). An ``asOf`` that is missing (the answer's) or unreadable, or a ``conditionId`` that is not
    0x + 64 hex, leaves the answer usable: that field is not trusted (no time: the caller falls back to when it
    asked; no condition id: "") and listed in ``untrusted``."""
    rows = d.get("positions")
    if not isinstance(rows, list):
        raise ValueError("positions must be an array")
    untrusted: list[tuple[str, str]] = []
    try:
        as_of = parse_as_of(d.get("asOf"))
        if as_of is None:
            untrusted.append(("asOf", "asOf missing"))
    except ValueError as exc:
        as_of = None
        untrusted.append(("asOf", str(exc)))
    out = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"positions[{i}] must be an object")
        token = row.get("tokenId")
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise ValueError(f"positions[{i}].tokenId must be a decimal token id")
        # a token written with a leading zero is the booked one, not a second token (that would close the booked
        # position and open an EXTERNAL one)
        token = canonical_token_id(token)
        if token in seen:  # two counts for one token: which one is the truth cannot be told
            raise ValueError(f"positions[{i}].tokenId repeats token {token}")
        seen.add(token)
        size = parse_decimal(row.get("size"))
        if size < 0:
            raise ValueError(f"positions[{i}].size must be >= 0")
        avg = row.get("avgPrice")
        price = ZERO if avg in (None, "") else parse_decimal(avg)
        if not ZERO <= price <= 1:
            raise ValueError(f"positions[{i}].avgPrice must be in [0, 1]")
        redeemable = row.get("redeemable", False)
        if not isinstance(redeemable, bool):
            raise ValueError(f"positions[{i}].redeemable must be a boolean")
        try:  # a position stored under an odd condition id would never be settled by its market's
            condition = condition_id(row, "conditionId")
        except ParseError:
            condition = ""
            untrusted.append(("positions.conditionId", f"positions[{i}].conditionId is not 0x + 64 hex"))
        try:
            row_as_of = parse_as_of(row.get("asOf"))
        except ValueError as exc:
            row_as_of = None
            untrusted.append(("positions.asOf", f"positions[{i}].{exc}"))
        out.append(VenuePosition(token, condition, str(row.get("outcome") or ""), size, price, redeemable, row_as_of))
    return VenuePositions(out, as_of, untrusted)


class InsidersVenue:
    """Client of the Insiders execution API over :class:`Http1Client` (keep-alive HTTP/1.1)."""

    name = "insiders"

    def __init__(self, base_url: str, token: Secret, *, post_timeout_s: float = 5.0,
                 query_timeout_s: float = 5.0, max_connections: int = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self.post_timeout_s = post_timeout_s
        self.query_timeout_s = query_timeout_s
        self.http = Http1Client(self.base_url, max_connections=max_connections,
                                connect_timeout_s=min(5.0, post_timeout_s),
                                default_headers={"Authorization": f"Bearer {token.value}"})

    async def _call(self, method: str, path: str, *, body: bytes = b"", raw_headers: bytes = b"",
                    timeout_s: float, client_order_id: str = "", order_id: str = "") -> v.VenueResult:
        """The order answered, checked to be the one asked about (``client_order_id``/``order_id`` when given)."""
        try:
            resp = await self.http.request(method, path, body=body, raw_headers=raw_headers, timeout_s=timeout_s)
        except ResponseTimeout:
            return v.VenueError("timeout", 0, "", f"{method} {path}: no answer within {timeout_s}s")
        except ConnectFailed as exc:
            return v.VenueError("connect", 0, "", str(exc)[:300])
        except ConnectionDropped as exc:
            return v.VenueError("disconnect", 0, "", str(exc)[:300])
        except BadResponse as exc:
            return v.VenueError("protocol", 0, "", str(exc)[:300])
        if 200 <= resp.status < 300:  # the contract answers 200; a 201/202 with the order is the order too
            return _about(parse_order(resp.body), client_order_id, order_id)
        return parse_error(resp.status, resp.body)

    async def place(self, request: v.PlaceRequest, *, traceparent: str = "") -> v.VenueResult:
        """``POST /v1/orders`` with the client order id as Idempotency-Key."""
        if not _SAFE_ID.match(request.client_order_id):
            return v.VenueError("http", 400, "INVALID_CLIENT_ORDER_ID", "client order id has unsafe characters")
        # header lines pre-encoded (the id is checked above; a traceparent is hex and dashes when valid)
        if traceparent and _SAFE_ID.match(traceparent):
            raw = b"Idempotency-Key: %b\r\nContent-Type: application/json\r\ntraceparent: %b\r\n" % (
                request.client_order_id.encode(), traceparent.encode())
        else:
            raw = b"Idempotency-Key: %b\r\nContent-Type: application/json\r\n" % request.client_order_id.encode()
        return await self._call("POST", "/v1/orders", body=request_body(request), raw_headers=raw,
                                timeout_s=self.post_timeout_s, client_order_id=request.client_order_id)

    async def query_by_client_id(self, client_order_id: str) -> v.VenueResult:
        """``GET /v1/orders?clientOrderId=…``."""
        return await self._call("GET", f"/v1/orders?clientOrderId={quote(client_order_id, safe='')}",
                                timeout_s=self.query_timeout_s, client_order_id=client_order_id)

    async def query(self, venue_order_id: str) -> v.VenueResult:
        """``GET /v1/orders/{orderId}``."""
        return await self._call("GET", f"/v1/orders/{quote(venue_order_id, safe='')}",
                                timeout_s=self.query_timeout_s, order_id=venue_order_id)

    async def cancel(self, venue_order_id: str) -> v.VenueResult:
        """``DELETE /v1/orders/{orderId}``."""
        return await self._call("DELETE", f"/v1/orders/{quote(venue_order_id, safe='')}",
                                timeout_s=self.query_timeout_s, order_id=venue_order_id)

    async def balance(self, wallet_id: str) -> dict[str, Any]:
        """``GET /v1/wallets/{walletId}/balance`` as parsed JSON (raises on failure)."""
        resp = await self.http.request("GET", f"/v1/wallets/{quote(wallet_id, safe='')}/balance",
                                       timeout_s=self.query_timeout_s)
        if resp.status != 200:
            raise RuntimeError(f"balance: HTTP {resp.status}")
        result: dict[str, Any] = orjson.loads(resp.body)
        return result

    async def _json(self, method: str, path: str, *, body: bytes = b"", raw_headers: bytes = b"",
                    any_success: bool = False) -> Answer:
        """The answer as JSON; a status other than 200 is an error, but any 2xx with ``any_success`` (a redemption's
        202 is followed as submitted; a 203/206 positions answer is not the wallet's whole count)."""
        try:
            resp = await self.http.request(method, path, body=body, raw_headers=raw_headers,
                                           timeout_s=self.query_timeout_s)
        except ResponseTimeout:
            return Answer(0, kind="timeout", message=f"{method} {path}: no answer within {self.query_timeout_s}s")
        except ConnectFailed as exc:
            return Answer(0, kind="connect", message=str(exc)[:300])
        except ConnectionDropped as exc:
            return Answer(0, kind="disconnect", message=str(exc)[:300])
        except BadResponse as exc:
            return Answer(0, kind="protocol", message=str(exc)[:300])
        if resp.status != 200 and not (any_success and 200 <= resp.status < 300):
            err = parse_error(resp.status, resp.body)
            return Answer(resp.status, code=err.code, message=err.message)
        try:
            parsed = orjson.loads(resp.body)
        except ValueError as exc:
            return Answer(0, kind="protocol", message=f"unreadable JSON: {exc}"[:300])
        if not isinstance(parsed, dict):
            return Answer(0, kind="protocol", message="answer is not an object")
        return Answer(200, parsed)

    async def redeem(self, key: str, wallet_id: str, condition_id: str, neg_risk: bool,
                     amounts: Sequence[Decimal]) -> Answer:
        """``POST /v1/redeem`` with ``key`` as Idempotency-Key (a replay answers the first redemption)."""
        if not _SAFE_ID.match(key):
            return Answer(400, code="INVALID_IDEMPOTENCY_KEY", message="redemption key has unsafe characters")
        raw = b"Idempotency-Key: %b\r\nContent-Type: application/json\r\n" % key.encode()
        return await self._json("POST", "/v1/redeem", body=redeem_body(wallet_id, condition_id, neg_risk, amounts),
                                raw_headers=raw, any_success=True)

    async def redemption(self, redeem_id: str) -> Answer:
        """``GET /v1/redeem/{redeemId}`` (an answer naming another redemption is no answer)."""
        answer = await self._json("GET", f"/v1/redeem/{quote(redeem_id, safe='')}", any_success=True)
        other = str(answer.body.get("redeemId") or "") if answer.body is not None else ""
        if other and other != redeem_id:
            return Answer(0, kind="protocol", code=MISMATCH, message=f"answer about redemption {other[:80]!r}")
        return answer

    async def positions(self, wallet_id: str) -> Answer:
        """``GET /v1/wallets/{walletId}/positions``."""
        return await self._json("GET", f"/v1/wallets/{quote(wallet_id, safe='')}/positions")

    async def warm_up(self, connections: int) -> None:
        """Open up to ``connections`` keep-alive connections (cheap GETs) so a burst needs no handshakes."""
        await asyncio.gather(*(self.query_by_client_id("warm-up") for _ in range(connections)))

    def hold_answers(self) -> None:
        """Keep answers unread while a burst of POSTs is written (see :meth:`Http1Client.hold_answers`)."""
        self.http.hold_answers()

    def release_answers(self) -> None:
        """Process the held answers and stop holding."""
        self.http.release_answers()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.http.close()
