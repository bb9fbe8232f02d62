"""The Insiders API fake through the executor's adapter (and raw HTTP for what the adapter does not call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import orjson
import pytest

from common.config import Secret
from services.executor.adapters.insiders_api import InsidersVenue
from services.executor.domain import venue_orders as v
from sim.insiders import InsidersFake
from sim.venue import StaticBooks

pytestmark = pytest.mark.integration
D = Decimal
TOKEN = "fake-token"


@pytest.fixture
async def fake() -> AsyncIterator[InsidersFake]:
    books = StaticBooks()
    books.set("tok", bids=[("0.49", "100"), ("0.48", "100")], asks=[("0.50", "100"), ("0.52", "100")])
    f = InsidersFake(books, token=TOKEN, settle_s=0.05, min_sizes={"tok": D("5")})
    await f.start()
    yield f
    await f.stop()


def req(coid: str, side: str = "BUY", otype: str = "FAK", amount: str | None = "10", size: str | None = None,
        limit: str = "0.52", token: str = "tok") -> v.PlaceRequest:
    return v.PlaceRequest(coid, "u_1", "w_1", "0xabc", token, side, otype, D(amount) if amount else None,
                          D(size) if size else None, D(limit))


async def test_place_replay_and_settlement(fake: InsidersFake) -> None:
    venue = InsidersVenue(fake.url, Secret(TOKEN))
    first = await venue.place(req("co_a", amount="60"))
    assert isinstance(first, v.VenueOrder) and first.status == "matched"
    # $50 buys 100 @ 0.50, $10 buys 19.23 @ 0.52
    assert (first.filled_size, first.making_amount) == (D("119.23"), D("50") + D("19.23") * D("0.52"))
    again = await venue.place(req("co_a", amount="60"))
    assert isinstance(again, v.VenueOrder) and again.order_id == first.order_id
    assert [p.outcome for p in fake.posts_for("co_a")] == ["created", "replayed"]
    assert fake.taken_counts() == {"co_a": 2} and fake.post_counts() == {"co_a": 2}
    await asyncio.sleep(0.06)
    final = await venue.query(first.order_id)
    assert isinstance(final, v.VenueOrder) and final.status == "confirmed"
    by_client = await venue.query_by_client_id("co_a")
    assert isinstance(by_client, v.VenueOrder) and by_client.order_id == first.order_id
    missing = await venue.query_by_client_id("co_nope")
    assert isinstance(missing, v.VenueError) and (missing.http_status, missing.code) == (404, "ORDER_NOT_FOUND")
    assert fake.books.levels("tok")[1] == ((D("0.52"), D("100") - D("19.23")),)
    await venue.close()


@pytest.mark.parametrize(("request_", "code"), [
    (req("co_1", limit="0.515"), "INVALID_ORDER_MIN_TICK_SIZE"),
    (req("co_2", amount="1"), "INVALID_ORDER_MIN_SIZE"),
    (req("co_3", otype="FOK", amount="200"), "FOK_ORDER_NOT_FILLED_ERROR"),
    (req("co_4", amount="2000000"), "INVALID_ORDER_NOT_ENOUGH_BALANCE"),
])
async def test_rejections(fake: InsidersFake, request_: v.PlaceRequest, code: str) -> None:
    venue = InsidersVenue(fake.url, Secret(TOKEN))
    r = await venue.place(request_)
    assert isinstance(r, v.VenueError) and (r.http_status, r.code) == (400, code)
    fake.closed_markets.add("tok")
    r = await venue.place(req("co_closed"))
    assert isinstance(r, v.VenueError) and r.code == "MARKET_CLOSED"
    await venue.close()


async def test_faults(fake: InsidersFake) -> None:
    venue = InsidersVenue(fake.url, Secret(TOKEN), post_timeout_s=0.2)
    fake.faults.fail_requests = 2
    assert isinstance(r := await venue.query_by_client_id("x"), v.VenueError) and r.http_status == 503
    assert isinstance(r := await venue.place(req("co_f")), v.VenueError) and r.http_status == 503
    assert fake.order("co_f") is None and fake.posts_for("co_f")[0].outcome == "fault"
    fake.faults.timeout_posts, fake.faults.timeout_delay_s = 1, 1.0
    assert isinstance(r := await venue.place(req("co_t")), v.VenueError) and r.kind == "timeout"
    assert fake.order("co_t") is not None  # taken despite the timeout
    fake.faults.lose_posts = 1
    assert isinstance(r := await venue.place(req("co_l")), v.VenueError) and r.kind == "timeout"
    assert fake.order("co_l") is None
    fake.faults.not_found_queries = 1
    assert isinstance(r := await venue.query_by_client_id("co_t"), v.VenueError) and r.http_status == 404
    assert isinstance(await venue.query_by_client_id("co_t"), v.VenueOrder)
    fake.faults.reject_tokens["tok"] = "MARKET_CLOSED"
    assert isinstance(r := await venue.place(req("co_r")), v.VenueError) and r.code == "MARKET_CLOSED"
    del fake.faults.reject_tokens["tok"]
    fake.faults.partial_ratio = D("0.5")
    assert isinstance(r := await venue.place(req("co_p", amount="20")), v.VenueOrder) and r.filled_size == D("20")
    fake.faults.partial_ratio = None
    fake.faults.fail_settlements = 1
    o = await venue.place(req("co_s"))
    await asyncio.sleep(0.06)
    assert isinstance(o, v.VenueOrder)
    assert isinstance(r := await venue.query(o.order_id), v.VenueOrder) and r.status == "failed"
    bad = InsidersVenue(fake.url, Secret("wrong"))
    assert isinstance(r := await bad.place(req("co_u")), v.VenueError) and r.http_status == 401
    await venue.close()
    await bad.close()


async def test_gtc_rests_fills_and_cancels(fake: InsidersFake) -> None:
    venue = InsidersVenue(fake.url, Secret(TOKEN))
    o = await venue.place(req("co_g", otype="GTC", amount=None, size="150", limit="0.50"))
    assert isinstance(o, v.VenueOrder) and (o.status, o.filled_size) == ("live", D("100"))
    fake.fill_resting("co_g", D("20"), D("0.50"))
    r = await venue.query(o.order_id)
    assert isinstance(r, v.VenueOrder) and (r.status, r.filled_size) == ("live", D("120"))
    c = await venue.cancel(o.order_id)
    assert isinstance(c, v.VenueOrder) and c.status == "cancelled" and c.filled_size == D("120")
    unmatched = await venue.place(req("co_n", limit="0.49"))
    assert isinstance(unmatched, v.VenueOrder) and unmatched.status == "unmatched"
    assert isinstance(r := await venue.query(unmatched.order_id), v.VenueOrder) and r.status == "cancelled"
    await venue.close()


async def test_wallet_endpoints_and_admin(fake: InsidersFake) -> None:
    venue = InsidersVenue(fake.url, Secret(TOKEN))
    await venue.place(req("co_w", amount="50", limit="0.50"))
    assert (await venue.balance("w_1"))["usd"] == "999950"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        async with s.get(f"{fake.url}/v1/wallets/w_1/positions") as r:
            [row] = (await r.json())["positions"]
            assert {k: row[k] for k in ("tokenId", "conditionId", "size", "avgPrice", "redeemable")} == {
                "tokenId": "tok", "conditionId": "", "size": "100", "avgPrice": "0.5", "redeemable": False}
        async with s.post(f"{fake.url}/_sim/faults", data=orjson.dumps({"fail_posts": 1, "reject_queue": ["X"]})) as r:
            assert r.status == 200
        assert fake.faults.fail_posts == 1 and list(fake.faults.reject_queue) == ["X"]
        async with s.put(f"{fake.url}/_sim/books/t2", data=orjson.dumps({"asks": [["0.3", "5"]]})) as r:
            assert r.status == 200
        assert fake.books.levels("t2") == ((), ((D("0.3"), D("5")),))
        async with s.get(f"{fake.url}/_sim/posts?since=0") as r:
            posts = (await r.json())["posts"]
        assert posts[0]["clientOrderId"] == "co_w" and posts[0]["arrivalNs"] > 0
        fake.faults.fail_posts = 0
        async with s.post(f"{fake.url}/v1/orders", data=b"{}") as r:  # no Idempotency-Key
            assert r.status == 400
    await venue.close()


async def test_fills_against_the_simulated_books() -> None:
    from sim.books import SimBooks

    frames: list[dict[str, object]] = []
    books = SimBooks(lambda _asset, frame: frames.append(frame))
    books.set_book("tok", bids=[("0.49", "100")], asks=[("0.50", "30"), ("0.51", "100")])
    f = InsidersFake(books, token=TOKEN)
    await f.start()
    venue = InsidersVenue(f.url, Secret(TOKEN))
    o = await venue.place(req("co_sim", amount="20", limit="0.51"))
    assert isinstance(o, v.VenueOrder) and o.filled_size == D("30") + D("9.80")  # $15 @ 0.50, $5 / 0.51
    assert books.levels("tok")[1] == ((D("0.51"), D("100") - D("9.80")),)
    assert any(fr.get("event_type") == "last_trade_price" for fr in frames)
    await venue.close()
    await f.stop()


async def test_redemptions_are_idempotent_and_pay_the_winning_shares(fake: InsidersFake) -> None:
    venue = InsidersVenue(fake.url, Secret(TOKEN))
    fake.holdings.register("0xC", [("tok", "Yes"), ("tok_no", "No")])
    await venue.place(req("co_r", amount="50", limit="0.50"))  # 100 shares of "Yes"
    fake.holdings.terminal_trade("w_1", "tok_no", "BUY", D(10), D("0.4"))  # bought in the terminal
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = orjson.dumps({"walletId": "w_1", "conditionId": "0xc", "negRisk": False})
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(f"{fake.url}/v1/redeem", data=body, headers={"Idempotency-Key": "rk_1"}) as r:
            assert (r.status, (await r.json())["error"]) == (400, "MARKET_NOT_RESOLVED")
        fake.holdings.resolve("0xc", "tok")
        async with s.get(f"{fake.url}/v1/wallets/w_1/positions") as r:
            rows = {p["tokenId"]: p for p in (await r.json())["positions"]}
        assert (rows["tok"]["redeemable"], rows["tok"]["outcome"], rows["tok_no"]["size"]) == (True, "Yes", "10")
        async with s.post(f"{fake.url}/v1/redeem", data=body) as r:  # no key
            assert r.status == 400
        fake.faults.fail_redeems = 1
        async with s.post(f"{fake.url}/v1/redeem", data=body, headers={"Idempotency-Key": "rk_1"}) as r:
            assert r.status == 503
        async with s.post(f"{fake.url}/v1/redeem", data=body, headers={"Idempotency-Key": "rk_1"}) as r:
            first = await r.json()
        async with s.post(f"{fake.url}/v1/redeem", data=body, headers={"Idempotency-Key": "rk_1"}) as r:
            again = await r.json()
        assert first["redeemId"] == again["redeemId"] and first["payoutUsd"] == "100"
        assert first["status"] == "submitted"
        await asyncio.sleep(fake.settle_s)
        async with s.get(f"{fake.url}/v1/redeem/{first['redeemId']}") as r:
            assert (await r.json())["status"] == "confirmed"
        async with s.post(f"{fake.url}/v1/redeem", data=body, headers={"Idempotency-Key": "rk_2"}) as r:
            assert (r.status, (await r.json())["error"]) == (400, "NOTHING_TO_REDEEM")
        async with s.get(f"{fake.url}/v1/redeem/rd_unknown") as r:
            assert r.status == 404
    assert fake.holdings.taken() == {"w_1|0xc": 1}
    assert [r.outcome for r in fake.holdings.records] == [
        "rejected", "invalid", "fault", "created", "replayed", "rejected"]
    assert await venue.balance("w_1") == {**await venue.balance("w_1"), "usd": "1000046"}
    await venue.close()
