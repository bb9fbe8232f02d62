"""Ingest end to end through the simulated venue, on real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
import orjson
import psycopg
import pytest

from services.ingest import dataapi
from services.ingest.identity import identify_batch
from sim.polymarket import PolymarketSim, SimTrade
from tests.helpers import alerts_raised, eventually, internal_channel, rpc_code
from tests.ingest.conftest import IngestFactory, follow, unfollow
from tests.ingest.streamutil import grpc_trades, logged_trades
from tradingtools.common.v1 import common_pb2
from tradingtools.market.v1 import market_pb2 as mpb
from tradingtools.market.v1 import market_pb2_grpc as mgrpc

pytestmark = pytest.mark.integration
LEADER = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20


def expected_id(trade: SimTrade) -> str:
    return identify_batch([dataapi.parse_row(trade.activity_row(), time.time_ns())], 0)[0].id


async def ids_in_log(redis_url: str) -> list[str]:
    return [e.id for e in await logged_trades(redis_url)]


async def test_followed_trades_stream_once_and_others_are_filtered(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest()
    await sim.rtds.wait_subscribed()
    # the new leader's backfill poll has run: the trade below is first seen on RTDS, not raced by the poller
    await eventually(lambda: any(q.get("user") == LEADER for _p, q in sim.data.requests))
    market = sim.add_market()
    mine = sim.trade(LEADER, market=market, side="SELL", price="0.37", size="12.5", fee="0.02")
    sim.trade(OTHER, market=market)

    async def first_from_grpc() -> mpb.LeaderTradeEvent:
        async for _cursor, event in grpc_trades(app.grpc.port):
            return event
        raise AssertionError("stream ended")

    event = await asyncio.wait_for(first_from_grpc(), 10)
    assert event.id == expected_id(mine)
    assert (event.wallet, event.asset_id, event.side, event.price, event.size, event.notional_usd, event.fee) == (
        LEADER, market.tokens[0], common_pb2.SIDE_SELL, "0.37", "12.5", "4.625", "0.02")
    assert event.source == mpb.FEED_SOURCE_RTDS_TRADES and event.activity_type == mpb.ACTIVITY_TYPE_TRADE
    assert event.venue_time_ms == mine.timestamp_s * 1000 and event.received_time_ns > 0
    assert event.trace.traceparent.startswith("00-")
    await eventually(lambda: app.metrics.count("filtered", "RTDS_TRADES") == 1)

    # the poller sees the same trade on data-api: deduplicated, not streamed again
    app.poller.request_all()
    await eventually(lambda: app.metrics.count("duplicate", "DATA_API") == 1)
    assert await ids_in_log(redis_url) == [event.id]

    def persisted() -> list[tuple[str, str]]:
        with psycopg.connect(db_url) as conn:
            return conn.execute("SELECT id, source FROM leader_trades").fetchall()
    await eventually(lambda: persisted() == [(event.id, "RTDS_TRADES")])


async def test_stall_is_detected_and_the_poller_fills_the_gap_exactly_once(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_stall_s=0.5)
    await sim.rtds.wait_subscribed()
    market = sim.add_market()
    trades = [sim.trade(LEADER, market=market, size="1")]
    await eventually(lambda: app.metrics.count("kept", "RTDS_TRADES") == 1)

    sim.rtds.stall()  # socket stays open, keep-alives continue, data stops
    trades += [sim.trade(LEADER, market=market, size=str(n)) for n in (2, 3, 4)]
    tx = trades[-1].tx_hash
    trades += [sim.trade(LEADER, market=market, size="4", tx=tx)]  # identical second fill in the same tx
    trades += [sim.trade(LEADER, market=market, size="5", taker=False, feeds=("data_api",))]  # poller only
    await eventually(lambda: app.metrics.count("stalls", "rtds") >= 1, timeout_s=5)
    stalled = await eventually(lambda: [a for a in alerts_raised(redis_url, "FEED_STALLED")
                                        if a.key == "feed_stalled:rtds"], message="the FEED_STALLED alert")
    assert stalled[0].fields["stall_s"] == "0.5"
    sim.rtds.resume()
    await eventually(lambda: app.metrics.total("backfilled") == 5, timeout_s=10)
    await sim.rtds.wait_subscribed()
    trades += [sim.trade(LEADER, market=market, size="6")]  # after the reconnect, both feeds

    expected = {expected_id(t) for t in trades[:4]} | {expected_id(trades[5]), expected_id(trades[6])}
    expected.add(identify_batch([dataapi.parse_row(t.activity_row(), time.time_ns()) for t in trades[3:5]], 0)[1].id)
    assert len(expected) == 7

    async def all_there() -> bool:
        return set(await ids_in_log(redis_url)) == expected
    await eventually(all_there, timeout_s=10)
    app.poller.request_all()  # more polls change nothing
    polls = app.poller.polls
    await eventually(lambda: app.poller.polls > polls)
    ids = await ids_in_log(redis_url)
    assert Counter(ids).most_common(1)[0][1] == 1 and set(ids) == expected
    assert app.metrics.count("reconnects", "rtds") >= 1


async def test_a_trade_made_while_the_feed_is_down_is_polled_when_it_is_back_once(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    """After a gap every leader is polled again as soon as RTDS is back: a trade made while the socket was
    down, after the gap's own poll, does not wait for the follow-up (10 minutes here, 15-60 s in service)."""
    await follow(redis_url, LEADER)
    app = await run_ingest(poll_gap_followup_s=600.0, rtds_stall_s=60.0)  # no watchdog gap while quiet
    await sim.rtds.wait_subscribed()
    await eventually(lambda: app.poller.polls >= 1)  # the new leader's backfill
    polls = app.poller.polls
    market = sim.add_market()

    sim.rtds.hold()  # the reconnect's handshake goes unanswered: the socket stays down
    await sim.rtds.disconnect_all()
    await eventually(lambda: app.poller.polls > polls and sim.rtds.held == 1)  # the gap's poll has answered
    trade = sim.trade(LEADER, market=market, feeds=("data_api",))
    sim.rtds.release()
    await sim.rtds.wait_subscribed()

    async def logged_once() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged_once, timeout_s=5, message="the trade made during the gap, logged")
    assert app.metrics.count("kept", "DATA_API") == 1

    sim.publish(trade, feeds=("rtds",))  # the same trade on RTDS too: a duplicate
    await eventually(lambda: app.metrics.count("duplicate", "RTDS_TRADES") == 1)
    assert await ids_in_log(redis_url) == [expected_id(trade)]
    assert app.metrics.count("kept", "RTDS_TRADES") == 0


async def test_new_leader_backfills_from_subscription_creation_only(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    app = await run_ingest()
    await sim.rtds.wait_subscribed()
    now = int(time.time())
    old = sim.trade(LEADER, timestamp_s=now - 3600, feeds=("data_api",))
    new = sim.trade(LEADER, timestamp_s=now - 5, feeds=("data_api",))
    await follow(redis_url, LEADER, created_s=now - 30)
    await eventually(lambda: app.metrics.total("backfilled") == 1)
    assert await ids_in_log(redis_url) == [expected_id(new)]
    assert expected_id(old) != expected_id(new)
    # the filter follows the index: RTDS trades of the new leader are kept, after removal filtered
    sim.trade(LEADER, feeds=("rtds",))
    await eventually(lambda: app.metrics.count("kept", "RTDS_TRADES") == 1)
    await unfollow(redis_url, LEADER)
    await eventually(lambda: LEADER not in app.followed)
    sim.trade(LEADER, feeds=("rtds",))
    await eventually(lambda: app.metrics.count("filtered", "RTDS_TRADES") == 1)


async def test_poller_backs_off_on_429_and_sends_a_custom_user_agent(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    await follow(redis_url, LEADER)
    sim.data.rate_limit_next(2, retry_after_s=0.2)
    trade = sim.trade(LEADER, feeds=("data_api",))
    app = await run_ingest(poll_interval_s=0.2)
    await eventually(lambda: app.metrics.total("backfilled") == 1, timeout_s=10)
    assert app.metrics.count("poll", "429") == 2
    assert await ids_in_log(redis_url) == [expected_id(trade)]
    path, params = sim.data.requests[-1]
    assert path == "/activity" and params["user"] == LEADER and params["sortDirection"] == "ASC"


async def test_poller_pages_through_a_busy_window(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    await follow(redis_url, LEADER)
    now = int(time.time())
    trades = [sim.trade(LEADER, timestamp_s=now - 50 + i // 7, size=str(i + 1), feeds=("data_api",))
              for i in range(45)]
    app = await run_ingest(poll_page_limit=10, poll_max_offset=20)
    await eventually(lambda: app.metrics.total("backfilled") == 45, timeout_s=10)
    assert set(await ids_in_log(redis_url)) == {expected_id(t) for t in trades}
    assert len(sim.data.requests) > 5


async def test_non_trade_activity_is_recorded_not_streamed(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, db_url: str) -> None:
    await follow(redis_url, LEADER)
    sim.activity(LEADER, "REDEEM", size="3.25")
    sim.activity(LEADER, "MERGE", size="7")
    app = await run_ingest()
    app.poller.request_all()

    def rows() -> list[tuple[str, str]]:
        with psycopg.connect(db_url) as conn:
            return conn.execute("SELECT activity_type, usdc_size::text FROM leader_activity ORDER BY 1").fetchall()
    await eventually(lambda: rows() == [("MERGE", "7"), ("REDEEM", "3.25")])
    assert await ids_in_log(redis_url) == []


async def test_grpc_streams_need_the_internal_token(run_ingest: IngestFactory) -> None:
    app = await run_ingest()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc.port}") as channel:  # grpcurl without -H
        stub = mgrpc.IngestServiceStub(channel)
        for metadata in ((), (("authorization", f"Bearer {'c0' * 32}"),)):
            for call in (stub.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(after_cursor="0"), metadata=metadata),
                         stub.StreamPriceTicks(mpb.StreamPriceTicksRequest(after_cursor="0"), metadata=metadata)):
                assert await rpc_code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_rejects_a_bad_cursor(run_ingest: IngestFactory) -> None:
    app = await run_ingest()
    async with internal_channel(app.grpc.port) as channel:
        stub = mgrpc.IngestServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamLeaderTrades(mpb.StreamLeaderTradesRequest(after_cursor="yesterday")):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "after_cursor" in (err.value.details() or "")


async def test_trades_endpoint_includes_maker_fills(sim: PolymarketSim, run_ingest: IngestFactory,
                                                    redis_url: str) -> None:
    await follow(redis_url, LEADER)
    market = sim.add_market()
    maker = sim.trade(LEADER, market=market, taker=False, feeds=("data_api",))
    taker = sim.trade(LEADER, market=market, feeds=("data_api",))
    app = await run_ingest(poll_endpoint="trades")
    await eventually(lambda: app.metrics.total("backfilled") == 2)
    assert set(await ids_in_log(redis_url)) == {expected_id(maker), expected_id(taker)}
    assert all(p.get("takerOnly") == "false" for path, p in sim.data.requests if path == "/trades")


async def test_recording_replays_through_normalize(sim: PolymarketSim, run_ingest: IngestFactory,
                                                   redis_url: str, tmp_path: Path) -> None:
    from services.ingest.normalize_cli import Normalizer, iter_messages

    await follow(redis_url, LEADER)
    app = await run_ingest(record_dir=str(tmp_path))
    await sim.rtds.wait_subscribed()
    trade = sim.trade(LEADER)
    sim.trade(OTHER)
    await eventually(lambda: app.metrics.count("kept", "RTDS_TRADES") == 1)
    app.poller.request_all()
    await eventually(lambda: app.metrics.count("duplicate", "DATA_API") == 1)
    assert app.recorder is not None
    app.recorder.close()
    normalizer = Normalizer()
    for msg in iter_messages(app.recorder.path.read_bytes()):
        normalizer.feed(msg)
    feeds = {orjson.loads(line)["feed"] for line in app.recorder.path.read_bytes().splitlines()}
    assert {"rtds", "data_api"} <= feeds
    # every trade, followed or not, once (the data-api copy of the leader's trade is the same trade)
    assert [i.fill.wallet for i in normalizer.events] == [LEADER, OTHER]
    assert normalizer.events[0].id == expected_id(trade)


async def test_a_quiet_feed_closed_by_the_stall_watchdog_is_reopened_at_once_however_often(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    """A connection that worked (it stayed up until the watchdog closed it) starts the reconnect backoff
    over: a feed that is merely quiet is never left closed for long, so a trade after many quiet
    stalls still arrives on RTDS (the growing backoff had left it closed up to 30 s at a time)."""
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_stall_s=0.3, reconnect_base_s=0.25, reconnect_cap_s=30.0)
    await eventually(lambda: app.metrics.count("stalls", "rtds") >= 6, timeout_s=30)
    connections = sim.rtds.connections
    await eventually(lambda: sim.rtds.connections > connections, timeout_s=3)  # 16 s and more before
    market = sim.add_market()
    sent: list[SimTrade] = []

    def one_kept() -> bool:  # a trade sent just as the watchdog closes a 0.3 s session is missed: send another
        if app.metrics.count("kept", "RTDS_TRADES"):
            return True
        sent.append(sim.trade(LEADER, market=market, feeds=("rtds",)))
        return False

    await eventually(one_kept, timeout_s=5, interval_s=0.2)
    logged = await ids_in_log(redis_url)
    assert logged and set(logged) <= {expected_id(t) for t in sent}
