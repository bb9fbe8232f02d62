"""A leader-trade subscription that goes silent while the socket brings other data (FORMATS §1.3: ``activity/
trades`` went down platform-wide while ``orders_matched`` flowed; §1.4: a busy topic such as ``crypto_prices`` as
liveness topic). The socket watchdog counted any data: ingest never noticed, the maker fills only ``trades``
carries were missed, and the regular poll round (minutes with many leaders) found them past the router's age limit.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sim.polymarket import PolymarketSim
from tests.helpers import alerts_raised, eventually
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.test_gap_backfill import LEADER, expected_id, ids_in_log

pytestmark = pytest.mark.integration
OTHER = "0x" + "cd" * 20


@pytest.fixture
async def prices(sim: PolymarketSim) -> AsyncIterator[None]:
    """``crypto_prices`` updates every 50 ms: the socket is never silent."""
    async def tick() -> None:
        while True:
            sim.rtds.publish("crypto_prices", "update", {"symbol": "btcusdt", "timestamp": 1, "value": 61000.5})
            await asyncio.sleep(0.05)
    task = asyncio.create_task(tick())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_trades_subscription_is_renewed_and_its_gap_polled_while_prices_flow(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, prices: None) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_extra_topics="crypto_prices:update", rtds_stall_s=1.0, poll_interval_s=3600.0,
                           poll_gap_followup_s=0.3)
    await sim.rtds.wait_subscribed()
    market = sim.add_market()
    sim.trade(OTHER, market=market, feeds=("rtds",))  # the firehose flows: trades is a busy topic
    await eventually(lambda: app.poller.polls >= 2 and app.poller._followup is None, timeout_s=5,
                     message="the start-up round and its follow-up")
    connections = app.rtds.connections

    for client in sim.rtds.clients:  # the venue stops sending activity/trades on this socket, silently
        client.subs.discard(("activity", "trades"))
    trade = sim.trade(LEADER, market=market, taker=False, data_lag_s=0.2)  # a maker fill: only `trades` has it

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=8, message=f"the maker fill recovered (connections {app.rtds.connections} "
                     f"since {connections}, polls {app.poller.polls})")
    await eventually(lambda: app.rtds.connections > connections, timeout_s=5,
                     message="the socket renewed (the subscription with it)")
    await sim.rtds.wait_subscribed()
    assert app.metrics.tally["stalls", "rtds"] >= 1
    live = sim.trade(LEADER, market=market, taker=False, feeds=("rtds",))  # the renewed subscription delivers

    async def both() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade), expected_id(live)]
    await eventually(both, timeout_s=3, message="a fill on the renewed subscription")


async def test_a_trades_topic_the_venue_keeps_silent_is_polled_for_without_reconnecting_again(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, prices: None) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_extra_topics="crypto_prices:update", rtds_stall_s=0.5, poll_interval_s=3600.0,
                           poll_gap_followup_s=0.2)
    await sim.rtds.wait_subscribed()
    market = sim.add_market()
    sim.trade(OTHER, market=market, feeds=("rtds",))
    await eventually(lambda: app.poller.polls >= 2 and app.poller._followup is None, timeout_s=5)

    async def switched_off() -> None:  # activity/trades off platform-wide: every (re)subscription is ignored
        while True:
            for client in sim.rtds.clients:
                client.subs.discard(("activity", "trades"))
            await asyncio.sleep(0.005)
    task = asyncio.create_task(switched_off())
    try:
        first = app.rtds.connections
        await eventually(lambda: app.rtds.connections == first + 1, timeout_s=5, message="renewed once")
        renewed = app.rtds.connections
        polls = app.poller.polls
        await eventually(lambda: app.poller.polls >= polls + 4, timeout_s=5, message="the silence polled for")
        trade = sim.trade(LEADER, market=market, taker=False, feeds=("rtds", "data_api"), data_lag_s=0.1)

        async def logged() -> bool:
            return await ids_in_log(redis_url) == [expected_id(trade)]
        await eventually(logged, timeout_s=5, message="a maker fill while trades is off, polled")
        assert app.rtds.connections == renewed  # no reconnect loop: orders_matched and prices stay unbroken
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_quiet_leader_trade_topic_that_never_delivered_is_not_reconnected_for(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, prices: None) -> None:
    """A leader-trade topic that never delivered (a venue that switched it off) is not expected: no reconnect loop."""
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_extra_topics="crypto_prices:update", rtds_stall_s=0.5)
    await sim.rtds.wait_subscribed()
    connections = app.rtds.connections
    await eventually(lambda: app.metrics.tally["frames", "rtds"] >= 40, timeout_s=5)  # ~2 s of prices
    assert app.rtds.connections == connections


async def test_a_socket_silent_as_a_whole_is_the_watchdogs_not_a_silent_trades_subscription(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    """trades delivered, then nothing at all comes on the socket (a quiet simulator, a dead socket): the socket's
    watchdog reconnects it and alerts ``feed_stalled:rtds``; the trades watch, for a subscription gone silent while
    other data flows, neither alerts nor renews as well."""
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_stall_s=0.5, poll_interval_s=3600.0)
    await sim.rtds.wait_subscribed()
    sim.trade(OTHER, market=sim.add_market(), feeds=("rtds",))
    await eventually(lambda: app.metrics.tally["frames", "rtds"] >= 1, timeout_s=5, message="the trade heard")
    connections = app.rtds.connections
    await eventually(lambda: app.rtds.connections >= connections + 4, timeout_s=10, message="the watchdog's rounds")
    keys = {a.key for a in alerts_raised(redis_url, "FEED_STALLED")}
    assert keys == {"feed_stalled:rtds"}, keys
