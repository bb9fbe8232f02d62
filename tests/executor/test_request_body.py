"""The POST /v1/orders body: canonical decimal strings, also when a fan-out repeats (differently written) values."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest

from common.config import Secret
from services.executor.adapters.insiders_api import InsidersVenue, request_body
from services.executor.domain import venue_orders as v

D = Decimal


def _req(amount: Decimal | None, size: Decimal | None, limit: Decimal) -> v.PlaceRequest:
    return v.PlaceRequest("co_1", "u_1", "w_1", "0xabc", "tok", "BUY", "FAK", amount, size, limit)


@pytest.mark.parametrize(("amount", "size", "limit", "want"), [
    (D("10.00"), None, D("0.520"), ("10", None, "0.52")),
    (D("10"), None, D("0.52"), ("10", None, "0.52")),  # equal values written differently: same strings
    (D("1E+1"), None, D("5.2E-1"), ("10", None, "0.52")),
    (None, D("19.2300"), D("0.01"), (None, "19.23", "0.01")),
    (D("0.000001"), None, D("0.99"), ("0.000001", None, "0.99")),
])
def test_decimals_are_canonical_strings(amount: Decimal | None, size: Decimal | None, limit: Decimal,
                                        want: tuple[str | None, str | None, str]) -> None:
    body = orjson.loads(request_body(_req(amount, size, limit)))
    assert (body["amountUsd"], body["size"], body["limitPrice"]) == want
    assert body["clientOrderId"] == "co_1" and body["negRisk"] is False


async def _capture_server(seen: list[bytes]) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        seen.append(head + await reader.readexactly(length))
        answer = b'{"orderId":"o1","clientOrderId":"co_1","status":"matched"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(answer), answer))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


@pytest.mark.integration
@pytest.mark.parametrize("traceparent", ["", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
async def test_the_order_post_on_the_wire(traceparent: str) -> None:
    seen: list[bytes] = []
    srv, url = await _capture_server(seen)
    venue = InsidersVenue(url, Secret("tok"))
    req = _req(D("10"), None, D("0.52"))
    result = await venue.place(req, traceparent=traceparent)
    assert isinstance(result, v.VenueOrder) and result.status == "matched"
    body = request_body(req)
    host = url.removeprefix("http://")
    want = (f"POST /v1/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer tok\r\n"
            f"Idempotency-Key: co_1\r\nContent-Type: application/json\r\n"
            + (f"traceparent: {traceparent}\r\n" if traceparent else "")
            + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    assert seen == [want]
    await venue.close()
    srv.close()
