"""A leader ingest learns of late (a lost index message, the hot index written late, a reload after a Redis
failover): its trades made in the seconds before were filtered on RTDS, and data-api indexes them 5-10 s late,
after the backfill poll ran at once. Nothing polled the leader again before the regular round (minutes with many
leaders, past the router's age limit), as a gap's follow-up does for the socket's trades.
"""
from __future__ import annotations

import time

import pytest

from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.test_gap_backfill import LEADER, expected_id, ids_in_log

pytestmark = pytest.mark.integration


async def test_a_trade_filtered_before_the_follow_was_seen_and_indexed_after_its_backfill_is_polled_again(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    app = await run_ingest(poll_interval_s=3600.0, poll_gap_followup_s=1.5, rtds_stall_s=60.0)  # no watchdog gaps
    await sim.rtds.wait_subscribed()
    await eventually(lambda: app.poller._followup is None, timeout_s=5, message="the start-up follow-up done")
    market = sim.add_market()
    # made after the follow was created and before ingest saw it: filtered on RTDS, indexed 1 s late
    trade = sim.trade(LEADER, market=market, feeds=("rtds", "data_api"), data_lag_s=1.0)
    await eventually(lambda: app.metrics.count("filtered", "RTDS_TRADES") == 1, message="filtered on RTDS")
    await follow(redis_url, LEADER, created_s=time.time() - 30)
    await eventually(lambda: app.poller.polls >= 1, message="the backfill poll")
    assert await ids_in_log(redis_url) == []  # not indexed yet when the backfill ran

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=5, message=f"the trade polled again (polls {app.poller.polls})")
