"""``activity/trades`` already off platform-wide when ingest starts (FORMATS §1.3: it went down for days while
``orders_matched`` flowed). The trades watch began only once ``trades`` had delivered, so a topic silent from
the start was never noticed: the maker fills only ``trades`` carries waited for the regular poll round (minutes
with many leaders, past the router's age limit) instead of being polled for every ``stall_s``.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.test_gap_backfill import LEADER, expected_id, ids_in_log

pytestmark = pytest.mark.integration
OTHER = "0x" + "cd" * 20


@pytest.fixture
async def trades_off(sim: PolymarketSim) -> AsyncIterator[None]:
    """The venue ignores every ``activity/trades`` subscription; ``orders_matched`` flows (takers every 50 ms)."""
    market = sim.add_market()

    async def venue() -> None:
        while True:
            for client in sim.rtds.clients:
                client.subs.discard(("activity", "trades"))
            sim.trade(OTHER, market=market, feeds=("rtds",), rtds_types=("orders_matched",))
            await asyncio.sleep(0.05)
    task = asyncio.create_task(venue())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_trades_topic_off_since_ingest_started_is_polled_for_while_orders_matched_flows(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str, trades_off: None) -> None:
    await follow(redis_url, LEADER)
    app = await run_ingest(rtds_stall_s=0.5, poll_interval_s=3600.0, poll_gap_followup_s=0.2)
    await eventually(lambda: app.metrics.count("filtered", "RTDS_ORDERS_MATCHED") >= 5, timeout_s=5,
                     message="orders_matched flowing")
    await eventually(lambda: app.poller.polls >= 2 and app.poller._followup is None, timeout_s=5,
                     message="the start-up round and its follow-up")
    assert app.metrics.count("kept", "RTDS_TRADES") == 0 and app.metrics.count("filtered", "RTDS_TRADES") == 0

    trade = sim.trade(LEADER, taker=False, feeds=("rtds", "data_api"), data_lag_s=0.1)  # a maker fill

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=5, message=f"a maker fill while trades is off, polled (polls "
                     f"{app.poller.polls}, connections {app.rtds.connections})")
