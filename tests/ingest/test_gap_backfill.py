"""After an RTDS gap (or an ingest start) the poller polls again once data-api has indexed the trades made just
before the socket came back: 5-10 s late (FORMATS §4.2). A follow-up timed from the gap instead missed them when the
outage outlasted it, and they waited for the regular round (minutes with many leaders: past the router's
TRADE_TOO_OLD, never copied)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from services.ingest import dataapi
from services.ingest.identity import identify_batch
from services.ingest.metrics import IngestMetrics
from services.ingest.poller import Poller
from services.ingest.targets import FollowedLeaders
from sim.polymarket import PolymarketSim, SimTrade
from tests.helpers import eventually
from tests.ingest.conftest import IngestFactory, follow
from tests.ingest.streamutil import logged_trades
from tests.ingest.test_paging import LEADER as PAGED_LEADER
from tests.ingest.test_paging import FakeRedis, FakeSink

LEADER = "0x" + "ab" * 20


def expected_id(trade: SimTrade) -> str:
    return identify_batch([dataapi.parse_row(trade.activity_row(), time.time_ns())], 0)[0].id


async def ids_in_log(redis_url: str) -> list[str]:
    return [e.id for e in await logged_trades(redis_url)]


class TimedApi:
    """A data-api that answers empty windows and notes when each was asked for (loop time)."""

    def __init__(self) -> None:
        self.at: list[float] = []

    async def window(self, user: str, start_s: int, end_s: int) -> tuple[list[Any], int]:
        self.at.append(asyncio.get_running_loop().time())
        return [], time.time_ns()


async def test_a_short_gap_costs_one_follow_up_round_timed_from_the_socket_being_back() -> None:
    api, followup_s = TimedApi(), 0.2
    poller = Poller(api, FakeSink(), FollowedLeaders({PAGED_LEADER}), FakeRedis(), IngestMetrics(),  # type: ignore[arg-type]
                    interval_s=3600.0, gap_followup_s=followup_s)
    poller.followed.loaded.set()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(poller.run())
    try:
        started = loop.time()
        poller.on_feed_up()  # the socket up at start: start-up is a gap, followed up like one
        await eventually(lambda: len(api.at) == 2, timeout_s=3, message="the start-up round and its follow-up")
        assert api.at[1] >= started + followup_s

        poller.on_gap(time.time())
        up = loop.time()
        poller.on_feed_up()  # back at once: the gap's round and the socket's round are one
        await eventually(lambda: len(api.at) == 4, timeout_s=3, message="the gap's round and its follow-up")
        assert api.at[3] >= up + followup_s
        await asyncio.sleep(followup_s * 2)
        assert len(api.at) == 4  # no second follow-up for a gap this short
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.integration
async def test_trade_made_just_before_reconnect_and_indexed_after_it_is_backfilled(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    await follow(redis_url, LEADER)
    # follow-up 1 s (15 s in service), data-api lag 0.5 s (5-10 s in service), regular round far away (many leaders)
    app = await run_ingest(poll_gap_followup_s=1.0, rtds_stall_s=60.0, poll_interval_s=3600.0)
    await sim.rtds.wait_subscribed()
    await eventually(lambda: app.poller.polls >= 1)  # the startup round
    polls = app.poller.polls
    market = sim.add_market()

    sim.rtds.hold()  # the socket stays down (the reconnect's handshake is held)
    await sim.rtds.disconnect_all()
    # the gap's poll and its follow-up have both run while the socket is still down
    await eventually(lambda: app.poller.polls >= polls + 2 and sim.rtds.held == 1, timeout_s=5)
    trade = sim.trade(LEADER, market=market, feeds=("data_api",), data_lag_s=0.5)  # made while down
    sim.rtds.release()
    await sim.rtds.wait_subscribed()

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=6, message="a trade made during the RTDS gap, indexed 0.5 s late, "
                     f"recovered (polls so far: {app.poller.polls})")


@pytest.mark.integration
async def test_trade_made_while_ingest_was_down_and_indexed_after_its_start_is_backfilled(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    """An ingest restart is a gap too: the startup round runs before data-api has indexed the last trades."""
    await follow(redis_url, LEADER)
    market = sim.add_market()
    trade = sim.trade(LEADER, market=market, feeds=("data_api",), data_lag_s=1.0)  # just before the start
    app = await run_ingest(poll_gap_followup_s=1.5, rtds_stall_s=60.0, poll_interval_s=3600.0)
    await sim.rtds.wait_subscribed()

    async def logged() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged, timeout_s=8, message="a trade made while ingest was down, indexed 1 s late, "
                     f"recovered (polls so far: {app.poller.polls})")
