"""An order answer about another order is not read as this one's: the adapter checks the ids the venue echoes."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest

from common.config import Secret
from services.executor.adapters.insiders_api import InsidersVenue
from services.executor.domain import venue_orders as v
from services.executor.domain.answer_policy import Verdict, classify
from tests.executor.scripted_venue import final_life, prepared, runner

pytestmark = pytest.mark.integration


async def _venue_answering(order: dict[str, str]) -> tuple[asyncio.Server, InsidersVenue]:
    body = orjson.dumps(order)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, InsidersVenue(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", Secret("t"))


def _request(coid: str) -> v.PlaceRequest:
    return v.PlaceRequest(coid, "u_1", "w_1", "0xabc", "123", "BUY", "FAK", Decimal("10"), None, Decimal("0.5"))


OTHER = {"orderId": "io_other", "clientOrderId": "co_other", "status": "confirmed", "filledSize": "20",
         "avgPrice": "0.5"}


async def test_a_post_answered_with_another_orders_fill_is_settled_by_query_not_booked() -> None:
    """An answer read off a connection out of step (a stray response, a misrouting proxy) carries another order's
    client order id: the old adapter returned it as this order, and its fill was booked to this one."""
    srv, venue = await _venue_answering(OTHER)
    result = await venue.place(_request("co_mine"))
    assert isinstance(result, v.VenueError) and result.kind == "protocol"
    c = classify(result)
    assert (c.verdict, c.reason, c.venue_may_hold) == (Verdict.SETTLE, "VENUE_ANSWER_MISMATCH", True)
    assert not isinstance(await venue.query_by_client_id("co_mine"), v.VenueOrder)
    assert not isinstance(await venue.query("io_mine"), v.VenueOrder)
    assert not isinstance(await venue.cancel("io_mine"), v.VenueOrder)
    await venue.close()
    srv.close()


@pytest.mark.parametrize("echo", [{"clientOrderId": "co_mine", "orderId": "io_mine"}, {}])
async def test_an_answer_that_echoes_this_order_or_no_id_is_the_order(echo: dict[str, str]) -> None:
    srv, venue = await _venue_answering({"status": "matched", "filledSize": "20", **echo})
    for result in (await venue.place(_request("co_mine")), await venue.query_by_client_id("co_mine"),
                   await venue.query("io_mine"), await venue.cancel("io_mine")):
        assert isinstance(result, v.VenueOrder) and result.filled_size == 20
    await venue.close()
    srv.close()


async def test_a_redemption_status_about_another_redemption_is_no_answer() -> None:
    srv, venue = await _venue_answering({"redeemId": "rd_other", "status": "confirmed", "payoutUsd": "700"})
    answer = await venue.redemption("rd_mine")
    assert (answer.status, answer.kind, answer.code) == (0, "protocol", "VENUE_ANSWER_MISMATCH")
    await venue.close()
    srv.close()


async def test_an_order_posted_over_http_and_answered_about_another_order_books_its_own_fill() -> None:
    """End to end through the runner: the POST's answer is another order's fill (20 shares); the order is settled by
    its status query instead, and books the 5 shares the venue reports for it (the old code booked the 20)."""
    p = prepared()
    coid = p.ticket.client_order_id
    mine = orjson.dumps({"orderId": "io_mine", "clientOrderId": coid, "status": "confirmed", "filledSize": "5",
                         "avgPrice": "0.5"})
    other = orjson.dumps(OTHER)
    posts: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"POST"):
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    posts.append(1)
                body = other if head.startswith(b"POST") else mine
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    venue = InsidersVenue(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", Secret("t"))
    r, journal = runner(venue)  # type: ignore[arg-type]
    r.start(p.ticket, p.life)
    last = await final_life(journal, coid)
    assert (last.state.value, last.filled_size, len(posts)) == ("FILLED", Decimal("5"), 1)
    await venue.close()
    srv.close()
