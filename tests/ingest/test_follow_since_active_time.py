"""A newly followed leader is backfilled from when its subscription last became ACTIVE (``active_time``: created,
resumed, switched PAPER/LIVE), as the router judges its trades. The backfill started at the last change of any kind
(``update_time``): a follower's sizing edit made before ingest saw the follow (ingest restarting, a Redis failover)
moved it past trades the router copies, and they were never polled.
"""
from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from common import hotindex
from sim.polymarket import PolymarketSim
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory, subscription
from tests.ingest.test_gap_backfill import LEADER, expected_id, ids_in_log

pytestmark = pytest.mark.integration


async def test_a_new_leader_edited_since_it_became_active_is_backfilled_from_when_it_became_active(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    app = await run_ingest(rtds_stall_s=60.0)
    await sim.rtds.wait_subscribed()
    now = time.time()
    trade = sim.trade(LEADER, timestamp_s=int(now) - 20, feeds=("data_api",))  # the leader not followed yet
    sub = subscription(LEADER, created_s=now - 60)
    sub.active_time.CopyFrom(sub.create_time)
    sub.update_time.FromNanoseconds(int((now - 5) * 1e9))  # a sizing edit: still ACTIVE since now - 60
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await hotindex.upsert(client, sub)
    finally:
        await client.aclose()
    await eventually(lambda: app.poller.polls >= 1, message="the backfill poll")

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=5, message="the trade backfilled")
    windows = [int(q["start"]) for _p, q in sim.data.requests]
    assert min(windows) <= int(now) - 60, windows
