"""The simulated Polymarket behaves like the venue where clients can tell."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from sim.books import SimBooks
from sim.polymarket import PolymarketSim
from sim.polymarket.replay import load_capture, replay
from tests.helpers import eventually

D = Decimal
UA = {"User-Agent": "tests/1.0"}
LEADER = "0x" + "ab" * 20


@pytest.fixture
async def sim() -> PolymarketSim:
    venue = await PolymarketSim(seed=3).start()
    yield venue  # type: ignore[misc]
    await venue.stop()


def test_sim_books_levels_consume_and_frames() -> None:
    frames: list[tuple[str, dict[str, object]]] = []
    books = SimBooks(lambda a, f: frames.append((a, f)))
    books.set_book("1", bids=[("0.4", "10"), ("0.45", "5")], asks=[("0.5", "3"), ("0.55", "20")], market="0xm")
    bids, asks = books.levels("1")
    assert bids == ((D("0.45"), D("5")), (D("0.4"), D("10"))) and asks[0] == (D("0.5"), D("3"))
    book = frames[-1][1]
    assert book["event_type"] == "book" and book["bids"][-1] == {"price": "0.45", "size": "5"}  # type: ignore[index]
    assert book["asks"][-1] == {"price": "0.5", "size": "3"}  # type: ignore[index]  # best is last on the wire
    fills = books.consume("1", "BUY", "5")
    assert fills == [(D("0.5"), D("3")), (D("0.55"), D("2"))]
    change, last = frames[-2][1], frames[-1][1]
    assert change["event_type"] == "price_change" and [  # type: ignore[index]
        (c["price"], c["size"], c["side"]) for c in change["price_changes"]] == [  # type: ignore[index]
        ("0.5", "0", "SELL"), ("0.55", "18", "SELL")]
    assert last["event_type"] == "last_trade_price" and last["size"] == "5"  # type: ignore[index]
    assert books.levels("1")[1] == ((D("0.55"), D("18")),)
    assert books.consume("1", "SELL", "100", limit_price="0.42") == [(D("0.45"), D("5"))]
    assert books.levels("unknown") == ((), ())


@pytest.mark.integration
async def test_rtds_subscription_rules_and_keepalive(sim: PolymarketSim) -> None:
    async with websockets.connect(sim.env()["TT_RTDS_URL"]) as ws:
        await ws.send(orjson.dumps({"subscriptions": [{"topic": "activity", "type": "trades"}]}).decode())
        await ws.send(orjson.dumps({"action": "subscribe", "subscriptions": [{"topic": "activity"}]}).decode())
        assert orjson.loads(await ws.recv()) == {"message": "Invalid request body"}
        await ws.send("PING")
        assert await ws.recv() == ""
        await ws.send(orjson.dumps({"action": "subscribe",
                                    "subscriptions": [{"topic": "activity", "type": "trades"}]}).decode())
        await sim.rtds.wait_subscribed()
        trade = sim.trade(LEADER, size="2.5", price="0.4")
        frame = orjson.loads(await ws.recv())
        assert (frame["topic"], frame["type"]) == ("activity", "trades")
        assert frame["payload"]["proxyWallet"].lower() == LEADER and frame["payload"]["size"] == 2.5
        assert frame["payload"]["timestamp"] == trade.timestamp_s and frame["timestamp"] > 10**12
        sim.rtds.stall()
        sim.trade(LEADER)
        await ws.send("PING")
        assert await ws.recv() == ""  # keep-alives continue during a stall, data does not
        assert sim.rtds.dropped == 1


@pytest.mark.integration
async def test_clob_ws_snapshot_array_dynamic_subscribe_and_pong(sim: PolymarketSim) -> None:
    m1, m2 = sim.add_market(), sim.add_market()
    async with websockets.connect(sim.env()["TT_CLOB_WS_URL"]) as ws:
        await ws.send(orjson.dumps({"assets_ids": [m1.tokens[0]], "type": "market"}).decode())
        [book] = orjson.loads(await ws.recv())
        assert book["event_type"] == "book" and book["asset_id"] == m1.tokens[0]
        await ws.send("PING")
        assert await ws.recv() == "PONG"
        await ws.send(orjson.dumps({"assets_ids": [m2.tokens[1]], "operation": "subscribe"}).decode())
        [book] = orjson.loads(await ws.recv())
        assert book["asset_id"] == m2.tokens[1]
        await ws.send(orjson.dumps({"assets_ids": [m1.tokens[0]], "operation": "unsubscribe"}).decode())
        await eventually(lambda: all(m1.tokens[0] not in c.subs for c in sim.clob.clients))
        sim.books.set_level(m1.tokens[0], "BUY", "0.3", "1")  # not subscribed any more
        sim.books.set_level(m2.tokens[1], "BUY", "0.3", "1")
        change = orjson.loads(await ws.recv())
        assert change["price_changes"][0]["asset_id"] == m2.tokens[1]


@pytest.mark.integration
async def test_clob_rest(sim: PolymarketSim) -> None:
    m = sim.add_market(tick_size="0.001", mid="0.5")
    base = sim.env()["TT_CLOB_API_URL"]
    async with httpx.AsyncClient(base_url=base) as http:
        book = (await http.get("/book", params={"token_id": m.tokens[0]})).json()
        assert book["tick_size"] == "0.001" and book["min_order_size"] == "5" and book["bids"][-1]["price"] == "0.499"
        assert (await http.get("/book", params={"token_id": "x"})).status_code == 400
        assert (await http.get("/book", params={"token_id": "123"})).status_code == 404
        assert (await http.get("/tick-size", params={"token_id": m.tokens[0]})).json() == {"minimum_tick_size": 0.001}
        market = (await http.get(f"/markets/{m.condition_id}")).json()
        assert [t["token_id"] for t in market["tokens"]] == list(m.tokens) and market["minimum_tick_size"] == 0.001


async def _resolved_frame(ws: websockets.ClientConnection) -> dict[str, object]:
    while True:
        frame = orjson.loads(await ws.recv())
        if isinstance(frame, dict) and frame.get("event_type") == "market_resolved":
            return frame  # type: ignore[no-any-return]


@pytest.mark.integration
async def test_clob_resolution_on_the_socket_and_on_rest(sim: PolymarketSim) -> None:
    m = sim.add_market(end_date_iso="2026-01-01T00:00:00Z")
    yes, no = m.tokens
    base = sim.env()["TT_CLOB_API_URL"]
    async with websockets.connect(sim.env()["TT_CLOB_WS_URL"]) as ws, httpx.AsyncClient(base_url=base) as http:
        await ws.send(orjson.dumps({"assets_ids": [yes, no], "type": "market"}).decode())
        await ws.recv()  # the snapshots
        before = (await http.get(f"/markets/{m.condition_id}")).json()
        assert (before["closed"], before["accepting_orders"], before["end_date_iso"]) == (
            False, True, "2026-01-01T00:00:00Z")
        assert not any(t["winner"] for t in before["tokens"])

        sim.resolve(m, no)
        frame = await _resolved_frame(ws)
        assert (frame["market"], frame["assets_ids"], frame["winning_asset_id"], frame["winning_outcome"]) == (
            m.condition_id, [yes, no], no, "No")
        after = (await http.get(f"/markets/{m.condition_id}")).json()
        assert (after["closed"], after["active"], after["accepting_orders"]) == (True, True, False)
        assert [(t["token_id"], t["winner"], t["price"]) for t in after["tokens"]] == [(yes, False, 0), (no, True, 1)]

        # a frame without a winner; REST late
        m2 = sim.add_market()
        await ws.send(orjson.dumps({"assets_ids": list(m2.tokens), "operation": "subscribe"}).decode())
        await ws.recv()
        sim.resolve(m2, m2.tokens[1], socket_winner=False, rest_delay_s=0.2)
        frame = await _resolved_frame(ws)
        assert (frame["winning_asset_id"], frame["winning_outcome"]) == ("", "")
        assert (await http.get(f"/markets/{m2.condition_id}")).json()["closed"] is False

        async def closed_on_rest() -> bool:
            body = (await http.get(f"/markets/{m2.condition_id}")).json()
            return bool(body["closed"] and body["end_date_iso"] and body["tokens"][1]["winner"])
        await eventually(closed_on_rest)

        # REST only, through the simulator's own control endpoint; queued raw answers come first
        m3 = sim.add_market()
        sim.clob.answer_market_next(m3.condition_id, 200, "not json")
        sim.clob.answer_market_next(m3.condition_id, 503, {"error": "busy"})
        resp = await http.post("/sim/resolve", content=orjson.dumps(
            {"condition_id": m3.condition_id, "winner": m3.tokens[0], "socket": False}))
        assert resp.json() == {"condition_id": m3.condition_id, "winner": m3.tokens[0]}
        first = await http.get(f"/markets/{m3.condition_id}")
        assert (first.status_code, first.text) == (200, "not json")
        assert (await http.get(f"/markets/{m3.condition_id}")).status_code == 503
        assert (await http.get(f"/markets/{m3.condition_id}")).json()["tokens"][0]["winner"] is True
        assert (await http.post("/sim/resolve", content=b'{"condition_id": "0x1"}')).status_code == 400
        with pytest.raises(ValueError):
            sim.resolve(m3, "123")


@pytest.mark.integration
async def test_data_api_like_the_venue(sim: PolymarketSim) -> None:
    m = sim.add_market()
    taker, _maker = sim.match(LEADER, LEADER, market=m, feeds=("data_api",))
    sim.activity(LEADER, "REDEEM")
    base = sim.env()["TT_DATA_API_URL"]
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/activity", params={"user": LEADER})).status_code == 403  # default UA
        http.headers.update(UA)
        rows = (await http.get("/trades", params={"user": LEADER})).json()
        assert [r["transactionHash"] for r in rows] == [taker.tx_hash]  # takerOnly defaults to true
        rows = (await http.get("/trades", params={"user": LEADER, "takerOnly": "false"})).json()
        assert len(rows) == 2 and "type" not in rows[0]
        rows = (await http.get("/activity", params={"user": LEADER, "type": "TRADE"})).json()
        assert {r["type"] for r in rows} == {"TRADE"} and len(rows) == 2
        rows = (await http.get("/activity", params={"user": LEADER})).json()
        assert {r["type"] for r in rows} == {"TRADE", "REDEEM"}
        assert (await http.get("/activity", params={"user": LEADER, "offset": 6000})).status_code == 400
        assert (await http.get("/activity", params={"user": "nobody"})).status_code == 400
        sim.data.rate_limit_next(1, 2.0)
        resp = await http.get("/activity", params={"user": LEADER})
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "2.0"
        sim.data.lag_s = 60
        sim.trade(LEADER, feeds=("data_api",))
        assert len((await http.get("/activity", params={"user": LEADER})).json()) == 3  # not indexed yet


@pytest.mark.integration
async def test_replay_of_a_recorded_capture(sim: PolymarketSim, tmp_path: Path) -> None:
    m = sim.add_market()
    payload = {"connection_id": "c", "topic": "activity", "type": "trades", "timestamp": 1,
               "payload": {"proxyWallet": LEADER, "transactionHash": "0x" + "1" * 64}}
    lines = [{"t": 1_000_000_000, "feed": "rtds", "frame": orjson.dumps(payload).decode()},
             {"t": 1_050_000_000, "feed": "clob",
              "frame": orjson.dumps([sim.books.books[m.tokens[0]].frame()]).decode()},
             {"t": 1_100_000_000, "feed": "data_api", "frame": orjson.dumps([
                 {"proxyWallet": LEADER, "timestamp": 5, "type": "TRADE", "price": 0.5, "size": 1}]).decode()}]
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    async with websockets.connect(sim.env()["TT_RTDS_URL"]) as rtds_ws, \
            websockets.connect(sim.env()["TT_CLOB_WS_URL"]) as clob_ws:
        await rtds_ws.send(orjson.dumps({"action": "subscribe",
                                         "subscriptions": [{"topic": "activity", "type": "trades"}]}).decode())
        await sim.rtds.wait_subscribed()
        await clob_ws.send(orjson.dumps({"assets_ids": [], "type": "market"}).decode())
        await eventually(lambda: len(sim.clob.clients) == 1)
        assert await replay(sim, load_capture(path), speed=10) == 3
        assert orjson.loads(await rtds_ws.recv()) == payload
        assert orjson.loads(await asyncio.wait_for(clob_ws.recv(), 5))[0]["event_type"] == "book"
    assert sim.data.rows[-1].activity_row["price"] == 0.5
