"""Poll windows reach back as far as the router still copies (``TT_ROUTER_MAX_TRADE_AGE_S``).

A window started ``TT_TUNE_INGEST_POLL_OVERLAP_S`` (120 s) before the previous one's end: a trade data-api
indexed later than that (a leader it answers late for) fell before every later window, though the router would
still have copied it for another 100+ s; a newly followed leader noticed late was backfilled from 120 s back only.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common import hotindex
from services.ingest.__main__ import Ingest
from services.ingest.config import IngestSettings
from services.ingest.model import DATA_API
from services.ingest.poller import CURSOR_KEY
from sim.polymarket import PolymarketSim
from tests.helpers import INTERNAL_ENV, eventually
from tests.ingest.conftest import IngestFactory, follow, subscription
from tests.ingest.test_gap_backfill import LEADER as GAP_LEADER
from tests.ingest.test_gap_backfill import expected_id, ids_in_log
from tests.ingest.test_paging import LEADER, NOW, FakeRedis, FakeSink, row

MAX_TRADE_AGE_S = 300  # the router's default TT_ROUTER_MAX_TRADE_AGE_S


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class LateIndexingApi:
    """A data-api that shows each row ``lag_s`` after its timestamp, and honours the window."""

    def __init__(self, clock: Clock, lag_s: float) -> None:
        self.clock, self.lag_s = clock, lag_s
        self.rows: list[dict[str, Any]] = []
        self.windows: list[tuple[int, int]] = []

    async def window(self, user: str, start_s: int, end_s: int) -> tuple[list[Any], int]:
        self.windows.append((start_s, end_s))
        visible = [r for r in self.rows if r["timestamp"] + self.lag_s <= self.clock()]
        return [r for r in visible if start_s <= r["timestamp"] <= end_s], int(self.clock() * 1e9)


@pytest.fixture
async def app() -> AsyncIterator[Ingest]:
    ingest = Ingest(IngestSettings.from_env(INTERNAL_ENV), "redis://127.0.0.1:9/0", "postgresql://unused")
    try:
        yield ingest
    finally:
        await ingest.http.close()
        await ingest.redis.aclose()
        await ingest.redis_text.aclose()


@pytest.mark.parametrize("lag_s", [5, 150, 250])
async def test_a_trade_indexed_late_but_still_copyable_is_found_by_the_regular_polls(app: Ingest, lag_s: int) -> None:
    clock = Clock(NOW)
    api, sink = LateIndexingApi(clock, lag_s), FakeSink()
    poller = app.poller
    poller.api, poller.sink, poller.redis, poller.clock = api, sink, FakeRedis(NOW - 60), clock  # type: ignore[assignment]
    api.rows.append(row(1, NOW + 3))  # made 3 s after a poll, indexed lag_s later
    found_at = None
    while clock.now <= NOW + MAX_TRADE_AGE_S and found_at is None:  # a regular round every 60 s
        await poller.poll_leader(LEADER)
        if sink.seen:
            found_at = clock.now
        clock.now += app.settings.tuning.poll_interval_s
    assert found_at is not None, (
        f"a trade data-api indexed {lag_s} s late was never polled (windows {api.windows}); the router copies it "
        f"until {MAX_TRADE_AGE_S} s old")
    assert found_at - (NOW + 3) <= MAX_TRADE_AGE_S


async def test_polling_the_same_trade_in_many_overlapping_windows_submits_it_once_per_window(app: Ingest) -> None:
    """The wide windows overlap: every repeat is the same id (the sink's seen-key drops it)."""
    clock = Clock(NOW)
    api, sink = LateIndexingApi(clock, 0), FakeSink()
    poller = app.poller
    poller.api, poller.sink, poller.redis, poller.clock = api, sink, FakeRedis(NOW - 60), clock  # type: ignore[assignment]
    api.rows.append(row(1, NOW - 10))
    new = []
    for _ in range(5):
        new.append(await poller.poll_leader(LEADER))
        clock.now += 60
    assert new == [1, 0, 0, 0, 0] and len(sink.seen) == 1


@pytest.mark.parametrize("down_s", [10, 200])
async def test_after_a_restart_the_first_window_covers_every_trade_still_copyable(app: Ingest, down_s: int) -> None:
    """The durable cursor is ``tt:ingest:poll_until`` (the last good window's end); ingest was down ``down_s``."""
    clock = Clock(NOW + down_s)
    api, redis = LateIndexingApi(clock, 0), FakeRedis(NOW)
    app.poller.api, app.poller.sink, app.poller.redis, app.poller.clock = api, FakeSink(), redis, clock  # type: ignore[assignment]
    await app.poller.poll_leader(LEADER)
    start, end = api.windows[0]
    assert start <= clock.now - MAX_TRADE_AGE_S, f"window {start - clock.now:+d} s .. now after {down_s} s down"
    assert end >= clock.now and redis.h[CURSOR_KEY][LEADER] == str(end)


@pytest.mark.integration
async def test_a_leader_noticed_late_is_backfilled_from_its_subscription_as_far_as_still_copyable(
        app: Ingest, r: Any) -> None:
    created = time.time() - 200  # the hot index told ingest 200 s after the follow: its trades since are copyable
    await hotindex.upsert(r, subscription(LEADER, created_s=created))
    announced: list[float] = []
    app.index.redis, app.index.clock = r, lambda: created + 200
    app.index.on_new_leader = lambda _leader, since_s: announced.append(since_s)
    app.followed.version = 0  # loaded before the follow
    await app.index.reload()
    assert announced and announced[0] <= created + 10, (
        f"backfilled from {announced[0] - created - 200:+.0f} s only: its trade 190 s ago (still copied) is lost")


@pytest.mark.integration
async def test_a_trade_heard_live_and_found_again_by_every_wide_window_is_logged_once(
        sim: PolymarketSim, run_ingest: IngestFactory, redis_url: str) -> None:
    await follow(redis_url, GAP_LEADER)
    app = await run_ingest(rtds_stall_s=60.0)
    await sim.rtds.wait_subscribed()
    await eventually(lambda: app.poller.polls >= 2 and app.poller._followup is None, timeout_s=5)
    trade = sim.trade(GAP_LEADER, market=sim.add_market())  # on the socket and in data-api

    async def logged_once() -> bool:
        return await ids_in_log(redis_url) == [expected_id(trade)]
    await eventually(logged_once, message="heard on the socket")
    for _ in range(3):  # three gaps: each polls a window holding the trade (socket back, then the follow-up)
        polls = app.poller.polls
        await sim.rtds.disconnect_all()
        await sim.rtds.wait_subscribed()
        await eventually(lambda p=polls: app.poller.polls >= p + 2 and app.poller._followup is None, timeout_s=5)
    assert app.metrics.tally["duplicate", DATA_API] >= 6  # found again by every one of those polls
    assert await logged_once() and app.metrics.tally["kept", DATA_API] == 0
