"""Both leader-trade subscriptions (``activity/trades`` and ``orders_matched``) already switched off by the venue
when ingest starts, while a liveness topic (``crypto_prices``) keeps the socket busy (FORMATS §1.3: the venue has
switched ``trades`` off platform-wide before). The topic watch only watched a topic that had delivered once: the
socket's watchdog saw data, nothing reported a gap, and a leader's fill waited for the regular poll round
(minutes with many leaders: past the router's age limit). Such a silence is polled for every ``stall_s``, as
after a renewal that did not bring ``trades`` back, and without a reconnect loop."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.test_gap_backfill import LEADER, expected_id, ids_in_log

pytestmark = pytest.mark.integration
LEADER_TYPES = (("activity", "trades"), ("activity", "orders_matched"))


@pytest.fixture
async def prices_only(sim: PolymarketSim) -> AsyncIterator[None]:
    """``crypto_prices`` every 50 ms; both leader-trade types ignored by the venue on every (re)subscription."""
    async def venue() -> None:
        while True:
            for client in sim.rtds.clients:
                client.subs.difference_update(LEADER_TYPES)
            sim.rtds.publish("crypto_prices", "update", {"symbol": "btcusdt", "timestamp": 1, "value": 61000.5})
            await asyncio.sleep(0.05)
    task = asyncio.create_task(venue())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_leader_trade_topics_off_since_start_are_polled_for_without_reconnecting(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, prices_only: None) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_extra_topics="crypto_prices:update", rtds_stall_s=0.5, poll_interval_s=3600.0,
                           poll_gap_followup_s=0.2)
    await eventually(lambda: app.rtds.connected, timeout_s=5, message="the socket up")
    await eventually(lambda: app.poller.polls >= 2 and app.poller._followup is None, timeout_s=5,
                     message="the start-up round and its follow-up")
    connections = app.rtds.connections
    market = sim.add_market()
    trade = sim.trade(LEADER, market=market, taker=False, feeds=("rtds", "data_api"), data_lag_s=0.1)

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=5, message=f"the fill polled for (polls {app.poller.polls})")
    assert app.rtds.connections == connections  # no reconnect loop: the liveness topic stays unbroken
