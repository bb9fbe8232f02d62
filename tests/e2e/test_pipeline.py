"""End to end through every service: simulator → ingest → router → executor → Insiders fake, control via Envoy, guard.

All through the real processes the supervisor runs (``tools.pipeline``), real Envoy, real PostgreSQL
and Redis; the simulator is the outside world (Polymarket feeds and the Insiders API fake, which
records every POST it receives).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import redis

from common.config import StorageSettings
from common.marketstate import BOOK_FEED_KEY, BookSnapshot, FeedBeat, book_key
from sim.polymarket import SimMarket
from tests.e2e.support import (
    Follower,
    add_market,
    address,
    created,
    floor_cents,
    get_json,
    move_bid,
    now_s,
    post_counts,
    posts,
    subscribe,
    trade,
    wait_followed,
    wait_polled_after,
)
from tests.helpers import eventually_sync
from tools.demo_streams import StreamTap, order_tap, terminal_events, trigger_tap
from tools.pipeline import Pipeline
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.guard.v1 import guard_pb2 as gpb

pytestmark = pytest.mark.integration

FIXED_20 = {"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "20"}


def test_rest_subscription_gets_one_correctly_sized_order_per_leader_trade(pipeline: Pipeline) -> None:
    p = pipeline
    leader, market = address(), add_market(pipeline)
    with p.rest() as rest:
        fixed = subscribe(rest, leader, sizing=FIXED_20)
        prop = subscribe(rest, leader, sizing={"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.1",
                                               "minOrderUsd": "1", "maxOrderUsd": "30"})
        wait_followed(p, leader)
        tx = "0x" + secrets.token_hex(32)
        fills = [("0.51", "100", None), ("0.52", "250", None), ("0.50", "80", tx), ("0.50", "80", tx),
                 ("0.53", "900", None), ("0.49", "60", None)]
        trades = [trade(p, leader, market, price=price, size=size, tx=t) for price, size, t in fills]

        eventually_sync(lambda: len(created(p, fixed.wallet_id)) == len(trades)
                        and len(created(p, prop.wallet_id)) == len(trades),
                        timeout_s=30, message="one order per leader trade for both followers at the Insiders API")
        for f in (fixed, prop):
            counts = post_counts(posts(p, f.wallet_id))
            assert len(counts) == len(trades) and set(counts.values()) == {1}, counts
        bodies = created(p, fixed.wallet_id).values()
        assert all((b["side"], Decimal(b["amountUsd"]), b["tokenId"], b["proxy"], b["walletId"])
                   == ("BUY", Decimal(20), market.tokens[0], fixed.proxy, fixed.wallet_id) for b in bodies)
        want = sorted(floor_cents(min(max(Decimal(pr) * Decimal(sz) * Decimal("0.1"), Decimal(1)), Decimal(30)))
                      for pr, sz, _t in fills)
        assert sorted(Decimal(b["amountUsd"]) for b in created(p, prop.wallet_id).values()) == want

        def listed() -> list[dict[str, Any]]:
            page = get_json(rest, f"/subscriptions/{fixed.sub_id}/fills")
            return list(page["fills"]) if len(page["fills"]) == len(trades) else []

        listed_fills = eventually_sync(listed, timeout_s=20, message="the fills listed through Envoy")
    assert {f["orderId"] for f in listed_fills} == set(created(p, fixed.wallet_id))
    assert {f["leaderTxHash"] for f in listed_fills} == {t.tx_hash for t in trades}
    assert all(Decimal(f["copyLatencyMs"]) > 0 and f["subscriptionId"] == fixed.sub_id for f in listed_fills)
    # newest first, compared as times: proto3 JSON prints a whole second without a fraction ("...02Z")
    times = [datetime.fromisoformat(f["fillTime"].replace("Z", "+00:00")) for f in listed_fills]
    assert times == sorted(times, reverse=True)


def test_the_same_trade_on_rtds_and_the_data_api_poller_is_copied_once(pipeline: Pipeline) -> None:
    p = pipeline
    leader, market = address(), add_market(pipeline)
    with p.rest() as rest:
        follower = subscribe(rest, leader, sizing=FIXED_20)
    wait_followed(p, leader)

    first = trade(p, leader, market, price="0.51", feeds=("rtds",))  # RTDS first, the poller later
    eventually_sync(lambda: len(created(p, follower.wallet_id)) == 1, timeout_s=20, message="the RTDS copy")
    p.sim.call(p.sim.sim.publish, first, feeds=("data_api",))
    second = trade(p, leader, market, price="0.52", feeds=("data_api",), taker=False)  # a maker fill: poller only
    third = trade(p, leader, market, price="0.53", feeds=("data_api",))  # the poller first, RTDS later
    wait_polled_after(p, leader, now_s())
    eventually_sync(lambda: len(created(p, follower.wallet_id)) == 3, timeout_s=20, message="the poller's copies")
    p.sim.call(p.sim.sim.publish, third, feeds=("rtds",))
    # a later trade: once its copy is at the venue, everything published before it went through the pipeline
    trade(p, leader, market, price="0.54", feeds=("rtds",))
    eventually_sync(lambda: len(created(p, follower.wallet_id)) == 4, timeout_s=20, message="the last copy")

    records = posts(p, follower.wallet_id)  # first, second (the poller alone saw it), third, the last one
    assert len(records) == 4 and set(post_counts(records).values()) == {1}, post_counts(records)
    assert second.taker is False


def test_a_leader_who_sells_before_the_copy_buy_settles_is_followed_out(pipeline: Pipeline) -> None:
    """The leader buys and sells at once: the follower's SELL is decided while its copy BUY is still at the
    venue. It is sent once the BUY is final, for what the BUY bought; skipping it (NOTHING_HELD) left the
    follower holding a position the leader had closed."""
    p = pipeline
    leader, market = address(), add_market(pipeline)
    with p.rest() as rest:
        follower = subscribe(rest, leader, sizing=FIXED_20)
    wait_followed(p, leader)
    trade(p, leader, market, price="0.51", size="200", feeds=("rtds",))
    trade(p, leader, market, side="SELL", price="0.50", size="200", feeds=("rtds",))

    def both() -> list[dict[str, Any]]:
        bodies = list(created(p, follower.wallet_id).values())
        return bodies if len(bodies) == 2 else []

    buy, sell = eventually_sync(both, timeout_s=30, message="the copy BUY, then the SELL after it")
    assert (buy["side"], sell["side"]) == ("BUY", "SELL")
    bought = p.sim.call(lambda: p.sim.insiders.order(buy["clientOrderId"])).filled_size
    assert bought > 0 and Decimal(sell["size"]) == bought
    assert set(post_counts(posts(p, follower.wallet_id)).values()) == {1}


@pytest.fixture
def orders_of(pipeline: Pipeline) -> Iterator[dict[str, StreamTap[epb.OrderEvent]]]:
    """Order-event taps per test (stopped afterwards)."""
    taps: dict[str, StreamTap[epb.OrderEvent]] = {}
    yield taps
    for tap in taps.values():
        tap.stop()


def _publish(p: Pipeline, leader: str, market: SimMarket, n: int, first: int) -> None:
    for i in range(first, first + n):
        trade(p, leader, market, price="0.51", size=str(40 + i))


def test_kill_9_router_then_executor_mid_stream_loses_and_doubles_nothing(
        pipeline: Pipeline, orders_of: dict[str, StreamTap[epb.OrderEvent]]) -> None:
    p = pipeline
    leader, market = address(), add_market(pipeline)
    with p.rest() as rest:
        followers = [subscribe(rest, leader, sizing={"mode": "SIZING_MODE_FIXED_USD", "fixedUsd": "5"})
                     for _ in range(2)]
    subs = {f.sub_id for f in followers}
    orders_of["all"] = order_tap(p.channel("executor"), keep=lambda e: e.subscription_id in subs).start()
    wait_followed(p, leader)
    restarts = {name: p.program(name)["restarts"] for name in ("router", "executor")}

    def copied(n: int) -> bool:
        return len(created(p, followers[0].wallet_id)) >= n

    _publish(p, leader, market, 15, 0)
    eventually_sync(lambda: copied(3), timeout_s=20, message="the first copies")
    router_pid = p.kill("router")  # in the middle of the first 15
    _publish(p, leader, market, 15, 15)  # while the router is down: kept in ingest's durable log
    p.wait_restarted("router", router_pid)
    _publish(p, leader, market, 15, 30)
    eventually_sync(lambda: copied(33), timeout_s=30, message="copies after the router's restart")
    executor_pid = p.kill("executor")  # in the middle of the third 15
    _publish(p, leader, market, 15, 45)
    p.wait_restarted("executor", executor_pid)

    total = 60
    eventually_sync(lambda: all(len(created(p, f.wallet_id)) == total for f in followers), timeout_s=90,
                    interval_s=0.2, message=f"{total} orders per follower at the Insiders API")
    for f in followers:
        records = posts(p, f.wallet_id)
        counts = post_counts(records)
        assert len(counts) == total, f"{len(counts)} client order ids for {f.wallet_id}"
        assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
        assert sorted(Decimal(r.body["amountUsd"]) for r in records if r.body) == [Decimal(5)] * total
    coids = {c for f in followers for c in created(p, f.wallet_id)}
    events = orders_of["all"].wait(lambda items: coids <= set(terminal_events(items)), 60.0, "terminal events")
    outcomes = Counter(epb.OrderEventType.Name(e.type) for e in terminal_events(events).values())
    assert outcomes == {"ORDER_EVENT_TYPE_FILLED": 2 * total}, outcomes
    assert all(p.program(name)["restarts"] == restarts[name] + 1 for name in restarts)


def _held_position(p: Pipeline, rest: Any, leader: str, market: SimMarket) -> tuple[Follower, Decimal]:
    follower = subscribe(rest, leader, sizing=FIXED_20)
    wait_followed(p, leader)
    trade(p, leader, market, price="0.51", size="200")

    def filled() -> Decimal:
        page = get_json(rest, f"/subscriptions/{follower.sub_id}/fills")
        return Decimal(page["fills"][0]["size"]) if page["fills"] else Decimal(0)

    return follower, eventually_sync(filled, timeout_s=20, message="the copy filled")


@pytest.mark.parametrize("crash_after", ["", "decision", "submit"])
def test_a_rest_trigger_sells_once_when_the_price_crosses_even_if_guard_is_killed(
        pipeline: Pipeline, crash_after: str) -> None:
    p = pipeline
    leader, market = address(), add_market(pipeline)
    with p.rest() as rest:
        follower, held = _held_position(p, rest, leader, market)
        tap = trigger_tap(p.channel("guard"), keep=lambda e: e.trigger.wallet == follower.proxy).start()
        try:
            if crash_after:  # the next guard process dies (like kill -9) right after that step of a fire
                p.once_env("guard", {"TT_GUARD_CRASH_AFTER": crash_after})
                p.wait_restarted("guard", p.kill("guard"))
            reply = rest.post("/triggers", json={
                "wallet": follower.proxy, "followerWalletId": follower.wallet_id, "subscriptionId": follower.sub_id,
                "assetId": market.tokens[0], "kind": "TRIGGER_KIND_STOP_LOSS", "triggerPrice": "0.45",
                "sellFraction": "1", "priceSource": "PRICE_SOURCE_BEST_BID"})
            assert reply.status_code == 200, reply.text
            trigger_id = reply.json()["id"]
            tap.wait(lambda items: any(e.trigger.id == trigger_id and e.type == gpb.TRIGGER_EVENT_TYPE_ARMED
                                       for e in items), 20.0, "the trigger ARMED in guard")
            guard = p.program("guard")
            move_bid(p, market, "0.47")
            move_bid(p, market, "0.44")
            if crash_after:
                p.wait_restarted("guard", guard["pid"])
                assert p.program("guard")["last_exit"] == 137, p.log_tail("guard")

            def done() -> dict[str, Any]:
                t = get_json(rest, f"/triggers/{trigger_id}")
                return t if t["state"] == "TRIGGER_STATE_DONE" else {}

            final = eventually_sync(done, timeout_s=30, message="the trigger DONE")
            events = tap.wait(lambda items: any(e.trigger.id == trigger_id and e.type == gpb.TRIGGER_EVENT_TYPE_DONE
                                                for e in items), 20.0, "the DONE event")
        finally:
            tap.stop()
    sells = [r for r in posts(p, follower.wallet_id) if (r.body or {}).get("side") == "SELL"]
    assert [r.client_order_id for r in sells] == [final["orderId"]], [(r.client_order_id, r.outcome) for r in sells]
    assert sells[0].outcome == "created" and Decimal(sells[0].body["size"]) == held  # type: ignore[index]
    # one fire; after a crash guard may publish the same FIRED event again (same event_id): at-least-once delivery
    fired = {e.event_id: e for e in events if e.trigger.id == trigger_id and e.type == gpb.TRIGGER_EVENT_TYPE_FIRED}
    mine = [(gpb.TriggerEventType.Name(e.type), e.event_id, e.price) for e in events if e.trigger.id == trigger_id]
    assert len(fired) == 1 and all(Decimal(e.price) <= Decimal("0.45") for e in fired.values()), mine



def _code(call: Any) -> Any:
    """The status of a blocking call made by ``call()``: a unary call's, a stream's at its first message."""
    import grpc

    try:
        reply = call()
        if isinstance(reply, grpc.Call):
            next(reply)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_grpc_without_the_internal_token_is_refused_by_every_service_of_the_stack(pipeline: Pipeline) -> None:
    """What grpcurl without ``-H "authorization: Bearer $(cat .run/internal_token)"`` gets from the running stack:
    UNAUTHENTICATED from SubmitOrder and every stream, also with the backend's token; health stays open."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tradingtools.control.v1 import control_pb2 as cpb
    from tradingtools.control.v1 import control_pb2_grpc as cgrpc
    from tradingtools.execution.v1 import execution_pb2_grpc as egrpc
    from tradingtools.guard.v1 import guard_pb2_grpc as ggrpc
    from tradingtools.market.v1 import market_pb2 as mpb
    from tradingtools.market.v1 import market_pb2_grpc as mgrpc

    def calls(ch: dict[str, grpc.Channel], metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        kw: dict[str, Any] = {"metadata": metadata, "timeout": 2}
        executor, router = egrpc.ExecutorServiceStub(ch["executor"]), egrpc.RouterServiceStub(ch["router"])
        ingest, guard = mgrpc.IngestServiceStub(ch["ingest"]), ggrpc.GuardServiceStub(ch["guard"])
        control = cgrpc.InternalControlServiceStub(ch["control"])
        return {
            "SubmitOrder": lambda: executor.SubmitOrder(epb.SubmitOrderRequest(), **kw),
            "StreamOrderEvents": lambda: executor.StreamOrderEvents(epb.StreamOrderEventsRequest(), **kw),
            "StreamRoutedTrades": lambda: router.StreamRoutedTrades(epb.StreamRoutedTradesRequest(), **kw),
            "StreamLeaderTrades": lambda: ingest.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(), **kw),
            "StreamPriceTicks": lambda: ingest.StreamPriceTicks(mpb.StreamPriceTicksRequest(), **kw),
            "StreamTriggerEvents": lambda: guard.StreamTriggerEvents(gpb.StreamTriggerEventsRequest(), **kw),
            "GetFunding": lambda: control.GetFunding(cpb.GetFundingRequest(follower_wallet_id="w_nobody"), **kw),
        }

    services = ("ingest", "router", "executor", "guard", "control")
    plain = {s: grpc.insecure_channel(pipeline.grpc_target(s)) for s in services}
    try:
        for metadata in ((), (("authorization", f"Bearer {pipeline.token}"),)):  # none; the backend's token
            codes = {name: _code(call) for name, call in calls(plain, metadata).items()}
            assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
        for s in services:
            health = health_pb2_grpc.HealthStub(plain[s]).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for ch in plain.values():
            ch.close()
    # with the stack's internal token (pipeline.channel sends it) every call passes the gate: the service
    # answers (an empty order is INVALID_ARGUMENT, an unknown wallet NOT_FOUND, a stream waits for news)
    codes = {name: _code(call) for name, call in calls({s: pipeline.channel(s) for s in services}, ()).items()}
    assert grpc.StatusCode.UNAUTHENTICATED not in codes.values(), codes
    assert (codes["SubmitOrder"], codes["GetFunding"]) == (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
def _stored_book(p: Pipeline, asset: str) -> tuple[BookSnapshot | None, FeedBeat | None]:
    client = redis.Redis.from_url(StorageSettings.from_env(p.env).redis_url.value)
    try:
        raw, beat = client.get(book_key(asset)), client.get(BOOK_FEED_KEY)
    finally:
        client.close()
    return (BookSnapshot.from_json(raw) if raw else None), FeedBeat.from_json(beat)


def _fresh_book(p: Pipeline, asset: str) -> BookSnapshot | None:
    book, beat = _stored_book(p, asset)
    return book if book is not None and book.fresh(int(now_s() * 1000), 10_000, beat) else None


def test_a_market_whose_book_came_back_after_a_restart_is_copied(pipeline: Pipeline) -> None:
    """The market's book empties, the stack restarts while the venue has no book for it (``/book`` 404, no
    snapshot on the socket), then the market has a book again and the leader trades: the copy goes out (priced
    from the leader's price while no fresh book is known, from the book once ingest resynced it)."""
    p = pipeline
    leader, market = address(), add_market(pipeline)
    token = market.tokens[0]
    with p.rest() as rest:
        follower = subscribe(rest, leader, sizing=FIXED_20)
    wait_followed(p, leader)
    trade(p, leader, market, price="0.51")
    eventually_sync(lambda: len(created(p, follower.wallet_id)) == 1, timeout_s=20, message="the first copy")
    eventually_sync(lambda: _fresh_book(p, token), timeout_s=20, message="ingest follows the book")
    p.sim.call(p.sim.sim.books.set_book, token)  # the book empties out
    eventually_sync(lambda: (b := _fresh_book(p, token)) is not None and not b.asks, timeout_s=20,
                    message="the empty book stored")

    p.sim.call(p.sim.sim.clob.withhold_book, token)
    pids = {name: p.kill(name) for name in ("ingest", "router", "executor")}
    for name, pid in pids.items():
        p.wait_restarted(name, pid)
    p.sim.call(p.sim.sim.books.set_book, token, bids=[("0.50", "100000")], asks=[("0.55", "100000")], emit=False)

    trade(p, leader, market, price="0.53")
    eventually_sync(lambda: any(Decimal(b["limitPrice"]) == Decimal("0.54")  # 0.53 + 200 bps, snapped down
                                for b in created(p, follower.wallet_id).values()),
                    timeout_s=60, message="the copy after the restart, priced from the leader's 0.53")
    assert _fresh_book(p, token) is None  # still no book at the venue

    p.sim.call(p.sim.sim.clob.withhold_book, token, False)
    book = eventually_sync(lambda: _fresh_book(p, token), timeout_s=30, message="ingest resynced the book")
    assert book.best_ask == Decimal("0.55")
    trade(p, leader, market, price="0.51")
    eventually_sync(lambda: len(created(p, follower.wallet_id)) == 3, timeout_s=30, message="the third copy")
    limits = sorted(Decimal(b["limitPrice"]) for b in created(p, follower.wallet_id).values())
    assert limits[-1] == Decimal("0.56")  # 0.55 + 200 bps of slippage, snapped down: priced on the book
    assert set(post_counts(posts(p, follower.wallet_id)).values()) == {1}
